"""CsvSink: metrics as CSV through aiofiles, in a long or a wide layout.

long: one row per value            wall_time,origin,step,name,value,epoch,round,task
wide: one row per (origin, step)   wall_time,origin,step,<one column per metric name>

Values are written with repr(), so every float round-trips exactly and NaN/±inf read back as
'nan'/'inf'/'-inf' (float() parses them). Names with commas, quotes or newlines are quoted by the
csv module. In the wide layout a metric name that appears later adds a column: the file is
rewritten once for that (to a temporary file, then renamed), never on every step.

Wide-layout columns are named after their metrics, except that a metric named wall_time, origin
or step gets the column "metric:<name>" so that no column repeats (csv.DictReader would take the
last one); a name that already starts with "metric:" gets the prefix too, so no two metrics can
share a column. A column "metric:step" thus holds the metric "step", and "metric:metric:x" holds
"metric:x". In the long layout names are values, never columns, and are written as they are.

An existing file is appended to. If its last record is torn (the writer was killed mid-write) it
is cut off first, with a warning. A newline inside a quoted name is not a record boundary, so
finding the last whole record reads the whole file once per open (see `_records_end`).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO, Literal

import anyio

from bus import Event, InvalidConfig, Metrics, Scalar, Sink, metric_items

from ._float_text import float_cells
from ._record_file import RecordFile

__all__ = ["CsvSink"]

LONG_HEADER = ("wall_time", "origin", "step", "name", "value", "epoch", "round", "task")
WIDE_FIXED = ("wall_time", "origin", "step")
RENAMED = "metric:"  # prefix of a wide-layout column whose metric's name would repeat a fixed column
_CHUNK = 1 << 20  # bytes read at a time when scanning a file


_CELL_CACHE = 100_000  # strings whose cell is remembered (names and labels repeat)


class _Cells(dict[str, str]):
    """The CSV cell of each string (a name, a label, a task): the text as csv.writer writes it,
    quoted only where it must be. Computed once per string; looking it up is a dict hit."""

    def __missing__(self, text: str) -> str:
        cell = encode_rows([(text, "")]).decode("utf-8")[:-3]  # the field, then ",\r\n"
        if len(self) < _CELL_CACHE:
            self[text] = cell
        return cell


def encode_long(events: Sequence[Event], cells: _Cells) -> bytes:
    """The long-layout rows of a batch of Scalar/Metrics events, byte for byte what csv.writer
    writes (floats as repr, strings quoted only where needed), at about twice its pace: each row
    is one f-string of cells computed once per name, with the batch's floats formatted together
    (`float_cells`)."""
    out: list[str] = []
    add = out.append
    labels: dict[int, str] = {}  # origins repeat within a batch: each label's cell once
    tails: dict[int, str] = {}  # so do contexts
    times = float_cells([event.wall_time for event in events])
    scalar_values = iter(float_cells([event.value for event in events if type(event) is Scalar]))  # type: ignore[union-attr]
    for event, time in zip(events, times, strict=True):
        origin = event.origin
        label = labels.get(id(origin))
        if label is None:
            label = labels[id(origin)] = cells[origin.label]
        context = event.context
        if context is None:
            tail = ",,,\r\n"
        elif (tail := tails.get(id(context))) is None:  # type: ignore[assignment]
            epoch = "" if context.epoch is None else context.epoch
            round_ = "" if context.round is None else context.round
            task = "" if context.task is None else cells[context.task]
            tail = tails[id(context)] = f",{epoch},{round_},{task}\r\n"
        if type(event) is Scalar:  # one row: the common case, written in one f-string
            add(f"{time},{label},{event.step},{cells[event.name]},{next(scalar_values)}{tail}")
            continue
        head = f"{time},{label},{event.step},"
        for name, value in metric_items(event):
            add(f"{head}{cells[name]},{value!r}{tail}")
    return "".join(out).encode("utf-8")


def encode_rows(rows: Sequence[Sequence[Any]]) -> bytes:
    """Rows as csv.writer writes them (excel dialect, \\r\\n after each), in UTF-8."""
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    return buffer.getvalue().encode("utf-8")


def wide_column(name: str) -> str:
    """The wide-layout column of the metric `name` (see the module docstring)."""
    return RENAMED + name if name in WIDE_FIXED or name.startswith(RENAMED) else name


def wide_metric(column: str) -> str:
    """The metric a wide-layout column holds: the inverse of `wide_column`."""
    return column[len(RENAMED) :] if column.startswith(RENAMED) else column


class _WideTable:
    """Rows being assembled for the wide layout: one open row per origin until its step moves."""

    def __init__(self, columns: Sequence[str] = ()) -> None:
        self.columns: list[str] = list(columns)
        self.index = {wide_metric(column): i for i, column in enumerate(self.columns)}  # metric -> cell
        self.open: dict[str, tuple[int, float, dict[str, float]]] = {}

    def copy(self) -> _WideTable:
        """An independent copy, to apply a batch to until it is on disk (a failed batch is retried)."""
        twin = _WideTable()
        twin.columns = list(self.columns)
        twin.index = dict(self.index)
        twin.open = {label: (step, t, dict(values)) for label, (step, t, values) in self.open.items()}
        return twin

    def add(self, events: Sequence[Event], done: list[tuple[str, int, float, dict[str, float]]]) -> None:
        """Apply a batch: each event's values join its origin's open row; a row whose step moves
        on is done. An empty Metrics is a row without values (wandb's `log({})`)."""
        index, columns, open_rows = self.index, self.columns, self.open
        last_origin: object = None
        label = ""
        for event in events:
            items = metric_items(event)
            if not items and type(event) is not Metrics:
                continue
            if event.origin is not last_origin:  # a batch is mostly one origin: its label once
                last_origin = event.origin
                label = event.origin.label
            current = open_rows.get(label)
            if current is not None and current[0] != event.step:
                done.append((label, *current))
                current = None
            if current is None:
                current = open_rows[label] = (event.step, event.wall_time, {})
            row = current[2]
            for name, value in items:
                row[name] = value
                if name not in index:
                    index[name] = len(columns)
                    columns.append(wide_column(name))

    def close_all(self, done: list[tuple[str, int, float, dict[str, float]]]) -> None:
        done.extend((label, *row) for label, row in self.open.items())
        self.open.clear()

    def row(self, label: str, step: int, wall_time: float, values: dict[str, float]) -> list[Any]:
        cells: list[Any] = [wall_time, label, step] + [""] * len(self.columns)
        for name, value in values.items():
            cells[3 + self.index[name]] = value
        return cells


class CsvSink(Sink):
    """Writes Scalar and Metrics events to a CSV file (appending if it exists).

    layout="long" (default) writes one row per value and suits any number of metrics;
    layout="wide" writes one row per (origin, step), one column per metric, like a spreadsheet.
    Its default name is "csv:" and the path as given, so sinks on different files never clash.
    """

    # Its file I/O goes through aiofiles (a worker thread per call), so its methods only await:
    # the bus (or the sink host) serves it on its own loop, no thread of its own, no hop per batch;
    # a hung disk is abandoned at call_timeout like any call.
    blocking = False

    accepts = (Scalar, Metrics)

    def __init__(self, path: str | Path, *, layout: Literal["long", "wide"] = "long") -> None:
        if layout not in ("long", "wide"):
            raise InvalidConfig(f"layout must be 'long' or 'wide', got {layout!r}")
        self.path = Path(path)
        if self.path.is_dir():
            raise InvalidConfig(f"CsvSink({str(path)!r}): that is a folder; give the path of a file in it")
        self.layout = layout
        self._file = RecordFile(self.path)
        self._wide = _WideTable()  # the header's columns and the open rows, as far as they are on disk
        self._cells = _Cells()

    @property
    def output_dir(self) -> Path | None:
        return self.path.parent

    def exclusive_paths(self) -> tuple[Path, ...]:
        return (self.path,)

    @property
    def name(self) -> str:
        return f"csv:{self.path.as_posix()}"

    @property
    def _fresh_header(self) -> bytes:
        return encode_rows([LONG_HEADER if self.layout == "long" else WIDE_FIXED])

    def output_mark(self) -> int | None:
        """Where the file ends after the last batch written (None while not open). A sink host
        (private or a job's) records it with what it settled; after a crash its successor passes
        it to `resume_output`."""
        return self._file.end if self.layout == "long" else None  # wide rows wait in memory

    def resume_output(self, mark: int) -> None:
        """Before `open`: cut the file back to `mark`, what a sink host that crashed had
        recorded; what it wrote after that is sent again, and must not be there twice."""
        self._file.resume = mark

    async def open(self) -> None:
        header, end = await anyio.to_thread.run_sync(self._inspect)  # reads the file: off the loop
        if self.layout == "long":
            if header is not None and tuple(header) != LONG_HEADER:
                raise InvalidConfig(f"{self.path} exists with another header: {header}")
        elif header is not None:
            if tuple(header[:3]) != WIDE_FIXED:
                raise InvalidConfig(f"{self.path} exists and is not a wide metricbus CSV: {header[:3]}")
            self._wide = _WideTable(header[3:])
        await self._file.open(end)  # only now, once the file is known to be ours, is a torn tail cut
        if header is None:
            await self._file.append(self._fresh_header)

    def _inspect(self) -> tuple[list[str] | None, int]:
        """The existing file's header (None if it has none yet) and where its last whole record
        ends. A file cut short inside the header this sink would write counts as having none."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            return None, 0
        with open(self.path, "rb") as f:
            end = _records_end(f)
            f.seek(0)
            head = f.read(len(self._fresh_header) + 1)
        if end == 0:
            if not self._fresh_header.startswith(head):
                raise InvalidConfig(f"{self.path} exists and holds no whole line of a metricbus CSV")
            return None, 0
        with open(self.path, newline="", encoding="utf-8") as text:
            return next(csv.reader(text)), end

    async def write_batch(self, events: Sequence[Event]) -> None:
        if self.layout == "long":
            await self._file.append(encode_long(events, self._cells))
        else:
            await self._write_wide(events, close_rows=False)

    async def flush(self) -> None:
        if self.layout == "wide":
            await self._write_wide((), close_rows=True)

    async def close(self) -> None:
        try:
            await self.flush()
        finally:
            await self._file.close()

    async def _write_wide(self, events: Sequence[Event], *, close_rows: bool) -> None:
        table = self._wide.copy()  # kept only once its rows are on disk, so a retry starts afresh
        done: list[tuple[str, int, float, dict[str, float]]] = []
        table.add(events, done)
        if close_rows:
            table.close_all(done)
        if len(table.columns) > len(self._wide.columns):
            await self._widen(table)
        if done:
            await self._file.append(encode_rows([table.row(*row) for row in done]))
        self._wide = table

    async def _widen(self, table: _WideTable) -> None:
        """Rewrite the file once with the grown header of `table`: earlier rows get empty new cells."""
        await self._file.close()
        try:
            _rewrite_with_header(self.path, [*WIDE_FIXED, *table.columns])
        finally:
            await self._file.open()  # the new file, or the old one if the rewrite failed: whole either way
        self._wide.columns, self._wide.index = list(table.columns), dict(table.index)  # as on disk now

    def __getstate__(self) -> dict[str, Any]:
        """The state of an unopened copy, for a worker process: an open file does not pickle."""
        return CsvSink(self.path, layout=self.layout).__dict__


def _records_end(f: BinaryIO) -> int:
    """Where the last whole record of a csv.writer file ends: after its last newline outside quotes.

    csv.writer quotes every field that holds a quote or a newline and doubles the quotes inside,
    so a newline is outside quotes exactly when an even number of quote characters precede it
    (bytes 0x22 and 0x0A occur in UTF-8 only as themselves). That takes one count over the whole
    file, at the speed of bytes.count; the walk back from the end then reads only the torn tail.
    """
    f.seek(0)
    quotes = sum(chunk.count(b'"') for chunk in iter(lambda: f.read(_CHUNK), b""))
    pos = f.tell()
    while pos > 0:
        start = max(0, pos - _CHUNK)
        f.seek(start)
        chunk = f.read(pos - start)
        stop = len(chunk)
        while (newline := chunk.rfind(b"\n", 0, stop)) >= 0:
            quotes -= chunk.count(b'"', newline, stop)  # now: the quotes before this newline
            if quotes % 2 == 0:
                return start + newline + 1
            stop = newline
        quotes -= chunk.count(b'"', 0, stop)
        pos = start
    return 0


def _rewrite_with_header(path: Path, header: list[str]) -> None:
    """Replace `path` by a copy with `header` and every row padded to its width."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(path, newline="", encoding="utf-8") as src, open(tmp, "w", newline="", encoding="utf-8") as dst:
            reader = csv.reader(src)
            writer = csv.writer(dst)
            next(reader, None)
            writer.writerow(header)
            width = len(header)
            for row in reader:
                writer.writerow(row + [""] * (width - len(row)))
            dst.flush()
            os.fsync(dst.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # left only if the copy failed
