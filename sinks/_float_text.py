"""float_cells: many floats as the text `repr()` gives each, at a fraction of repr's cost.

`repr(float)` is the shortest text that reads back as the same float, and it is what csv.writer
writes; for a float column it is most of the cost of a row (a wall time takes ~250 ns). msgspec's
JSON encoder computes the same shortest digits in C for a whole list at once (~30 ns a float). The
two texts differ only in notation, never in digits: JSON writes NaN and ±inf as `null`, and the
two switch to exponent notation at different magnitudes (Python below 1e-4 and from 1e16 up, with
`e+16`/`e-05`; msgspec at other points, with `e16`/`e-7`, and as `0.0000…` before that). So a
cell is taken from msgspec's text unless it holds an `e`, an `n` or `0.0000`, in which case it is
`repr()`'s. tests/test_float_text.py checks this against repr over every kind of float.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

__all__ = ["float_cells"]

_encode = msgspec.json.Encoder().encode


def float_cells(values: Sequence[float]) -> list[str]:
    """`[repr(v) for v in values]`, for a list of floats (bools and ints are not floats here)."""
    if not values:
        return []
    text = _encode(values)[1:-1]
    cells = text.decode("ascii").split(",")
    if b"e" in text or b"n" in text or b"0.0000" in text:  # some cells are in another notation
        return [cell if _same_as_repr(cell) else repr(value) for cell, value in zip(cells, values, strict=True)]
    return cells


def _same_as_repr(cell: str) -> bool:
    return "e" not in cell and "n" not in cell and "0.0000" not in cell
