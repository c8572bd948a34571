"""float_cells gives repr()'s text for every float, the text csv.writer writes."""

from __future__ import annotations

import csv
import io
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from sinks._float_text import float_cells

EDGES = [0.0, -0.0, 1e-4, 9.999999999999999e-05, 1e16, 9999999999999998.0, 5e-324, 1.7976931348623157e308, 0.1, 1 / 3]
EDGES += [float("nan"), float("inf"), -float("inf"), 2.0**53, 1796643249.66334, 1e-7, 1.5e-5, 123456789012345678.0]


@settings(max_examples=300)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True), max_size=200))
def test_every_float_reads_as_repr_writes_it(values: list[float]) -> None:
    assert float_cells(values) == [repr(v) for v in values]


@given(st.lists(st.integers(min_value=0, max_value=2**64 - 1), min_size=1, max_size=500))
def test_any_bit_pattern_too(bits: list[int]) -> None:
    values = [struct.unpack("<d", b.to_bytes(8, "little"))[0] for b in bits]
    assert float_cells(values) == [repr(v) for v in values]


def test_the_edges_of_both_notations_and_a_csv_writers_row() -> None:
    values = EDGES + [-v for v in EDGES]
    assert float_cells(values) == [repr(v) for v in values]
    buffer = io.StringIO()
    csv.writer(buffer).writerow(values)
    assert buffer.getvalue() == ",".join(float_cells(values)) + "\r\n"
    assert float_cells([]) == []
