"""What `SummaryWriter.export_scalars_to_json` exports, kept on disk instead of in memory.

tensorboardX keeps every value `add_scalars` logs in a dict for the life of the writer (its
docstring warns that this "explodes your RAM" in long runs) and `export_scalars_to_json` dumps
it as `{"<logdir>/<main_tag>/<tag>": [[timestamp, step, value], ...], ...}`, then empties it.
Here each value is one fixed-size binary row appended to an unlinked temporary file (a buffered
write: no system call per value); only the series' keys stay in memory. The export reads the
rows back with numpy and writes, series by series, the JSON text `json.dump` writes for
tensorboardX's dict.
"""

from __future__ import annotations

import json
import struct
import tempfile
from typing import IO, Any

__all__ = ["ScalarsRecord"]

_ROW = struct.Struct("<IBdqd")  # series index, flags, timestamp, step, value
_STEP_NONE = 1  # add_scalars was called without global_step: tensorboardX records null
_INT_TIME = 2  # walltime was given as an int: tensorboardX records it as given
_BUFFER = 1 << 16


class ScalarsRecord:
    """add_scalars' values since the last export, as tensorboardX keeps them, on disk."""

    def __init__(self) -> None:
        self._keys: dict[str, int] = {}  # series key -> index, in first-logged order
        self._file: IO[bytes] | None = None

    def add(self, key: str, timestamp: float | int, step: int | None, value: float) -> None:
        index = self._keys.get(key)
        if index is None:
            index = self._keys[key] = len(self._keys)
        flags = (_STEP_NONE if step is None else 0) | (_INT_TIME if type(timestamp) is int else 0)
        if self._file is None:
            # kept open for the writer's life (unlinked already: nothing is left on disk at exit)
            self._file = tempfile.TemporaryFile(prefix="metricbus-scalars-", buffering=_BUFFER)  # noqa: SIM115
        self._file.write(_ROW.pack(index, flags, timestamp, step or 0, value))

    def export(self, path: Any) -> None:
        """Write the rows as tensorboardX's `json.dump(scalar_dict, f)` writes them, then forget them."""
        import numpy as np

        rows: Any = np.zeros(0, dtype=[("index", "<u4")])
        if self._file is not None:
            self._file.flush()
            self._file.seek(0)
            layout = np.dtype(
                {"names": ["index", "flags", "time", "step", "value"], "formats": ["<u4", "u1", "<f8", "<i8", "<f8"]}
            )
            rows = np.fromfile(self._file, dtype=layout)
        with open(path, "w") as out:  # tensorboardX: open(path, "w"), the platform's encoding, ASCII JSON
            out.write("{")
            for n, (key, index) in enumerate(self._keys.items()):
                series = rows[rows["index"] == index]
                out.write(f"{', ' if n else ''}{json.dumps(key)}: [")
                out.write(", ".join(_row_json(row) for row in series.tolist()))
                out.write("]")
            out.write("}")
        self._keys.clear()
        if self._file is not None:
            self._file.seek(0)
            self._file.truncate()


def _row_json(row: tuple[int, int, float, int, float]) -> str:
    _, flags, timestamp, step, value = row
    return json.dumps([int(timestamp) if flags & _INT_TIME else timestamp, None if flags & _STEP_NONE else step, value])
