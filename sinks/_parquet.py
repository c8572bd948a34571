"""ParquetSink: a run as Parquet part files that DuckDB, pandas and polars read while it trains.

    run_dir/part-000001.parquet
    run_dir/part-000002.parquet          one part per `part_interval` seconds (or `part_rows` rows)
    run_dir/part-000001-000002.parquet   what compaction at close makes of them (compact=True)

Every part has the one schema of `PARQUET_SCHEMA_FIELDS` (version `PARQUET_SCHEMA_VERSION`, kept
in each file's metadata as `metricbus.schema`; both public in `sinks`), so
`read_parquet('run_dir/**/*.parquet')` is one table:

    wall_time  timestamp[us, UTC]  when the value was logged
    origin     string              Origin.label: "main", "site-1/rank0", ...
    site       string              the origin's parts; null where the origin has none
    node       string
    rank       int64
    job        string              the sink's `job=` (one name for every rank of a job), or null
    name       string              the metric's name, as logged
    step       int64
    value      double              NaN and +-inf stay themselves; null on a text row
    text       string              a Text event's text; null on a value row
    epoch      int64               the event's Context, null where it has none
    round      int64
    task       string

Scalar and Metrics events give one row per value, Text events one row with `text` set; other
kinds (histograms, images, hparams, ...) are not sent to this sink (`accepts`), as for CSV.

Every batch is made durable before `write_batch` returns: its rows are appended, whole, to the
staging file of the next part (`.part-000007.arrows`: hidden, matched by no `*.parquet` glob; an
Arrow IPC stream, the schema then one record batch per batch, which `pyarrow.ipc.open_stream`
reads). The bus counts a batch delivered once `write_batch` returns, and a sink host that
restarts after a crash skips what its predecessor settled, so those rows must be on disk then
(in the OS, as CSV's unbuffered appends are; no fsync). An append that fails midway is cut off
before the next one (as `RecordFile` does for CSV), so a failed batch leaves no rows behind to be
written twice when the bus retries it.

A part is written from the staged rows, to a hidden temporary file (`.part-*.parquet.tmp`), then
renamed: a reader sees whole parts or none. Then the staging file is removed, and the next part
stages into a file of its own. A part is written once its oldest row was logged `part_interval`
seconds ago (a timer thread writes it when no batch comes to do it; the time a row spent
reaching the sink counts up to half the interval, so a replay of old wall times makes parts of
half an interval), or once `part_rows` rows are staged; so a reader sees a value about
`part_interval` after it was logged, and never more than the bus's `max_interval` plus
`part_interval` after. A part write that fails (a full disk) fails the batch that comes to stage
behind it, which the bus retries (the sink is down); the staged rows wait on disk until a write
succeeds.

At open (a new run, or a sink host restarted after a kill), the rows a killed writer staged
become their part before anything else, with a torn last record cut off; a staging file whose
part was already written (the writer was killed between the rename and the removal) is removed.
So a killed sink host loses no row it had returned from `write_batch` for, and writes none twice.

compact=True merges this session's parts into one file at close (written, renamed, then the
parts removed); a reader that lists the directory in that instant may see both or miss a part it
listed, and a sink killed in that instant leaves both, which the next open resolves by removing
the parts a compacted file covers.
"""

from __future__ import annotations

import array
import contextlib
import functools
import logging
import os
import re
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bus import Context, Event, InvalidConfig, Metrics, Origin, Scalar, Sink, Text

if TYPE_CHECKING:
    import pyarrow as pa

LOCK_FILE = ".metricbus.lock"  # locked by the process that feeds the sink (bus/_file_locks.py)

__all__ = ["PARQUET_SCHEMA_FIELDS", "PARQUET_SCHEMA_VERSION", "ParquetSink", "parquet_schema"]

log = logging.getLogger("metricbus")

#: The columns of every part, in order: (name, Arrow type, nullable). See the module docstring.
PARQUET_SCHEMA_FIELDS: tuple[tuple[str, str, bool], ...] = (
    ("wall_time", "timestamp[us, tz=UTC]", False),
    ("origin", "string", False),
    ("site", "string", True),
    ("node", "string", True),
    ("rank", "int64", True),
    ("job", "string", True),
    ("name", "string", False),
    ("step", "int64", False),
    ("value", "double", True),
    ("text", "string", True),
    ("epoch", "int64", True),
    ("round", "int64", True),
    ("task", "string", True),
)
#: Bumped only when a column changes meaning or type; new columns would be added at the end.
PARQUET_SCHEMA_VERSION = "1"

_PART = re.compile(r"part-(\d{6,})(?:-(\d{6,}))?\.parquet")
_STAGED = re.compile(r"\.part-(\d{6,})\.arrows")  # the staged rows of that part
_COMPACT_ROWS = 1 << 20  # rows per row group of a compacted file


@functools.cache
def parquet_schema() -> pa.Schema:
    """The Arrow schema of every part (imports pyarrow)."""
    import pyarrow as pa

    types = {
        "string": pa.string(),
        "int64": pa.int64(),
        "double": pa.float64(),
        "timestamp[us, tz=UTC]": pa.timestamp("us", tz="UTC"),
    }
    fields = [pa.field(name, types[kind], nullable=nullable) for name, kind, nullable in PARQUET_SCHEMA_FIELDS]
    return pa.schema(fields, metadata={"metricbus.schema": PARQUET_SCHEMA_VERSION})


def _packed(kind: pa.DataType, code: str, values: list[Any]) -> pa.Array:
    """An Arrow array of numbers without nulls, through a packed `array.array`: pyarrow converts
    a list of floats ~8x slower."""
    import pyarrow as pa

    packed = array.array(code, values)
    return pa.Array.from_buffers(kind, len(packed), [None, pa.py_buffer(packed)])


class _Rows:
    """The rows of one batch, column by column. Origins and contexts repeat, so a row holds
    their index into the sink's `origins` / `contexts`, expanded to columns once per batch."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.origin: list[int] = []
        self.name: list[int] = []  # index into `names`: pyarrow builds a column of repeated
        self.names: list[str] = []  # strings ~50x faster by `take` from the distinct ones
        self.name_ids: dict[str, int] = {}
        self.step: list[int] = []
        self.value: list[float | None] = []
        self.context: list[int | None] = []
        self.any_context = False
        self.texts: list[tuple[int, str]] = []  # (row, text) of the text rows, rare

    def __len__(self) -> int:
        return len(self.name)


class _Staging:
    """The staged rows of one part: in memory (the record batches the part is made of) and on
    disk, in `path`, an Arrow IPC stream appended to without a buffer, so that each batch is in
    the OS before `write_batch` returns. Each `append` lands whole or is cut off."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.batches: list[pa.RecordBatch] = []
        self.rows = 0
        self.since = 0.0  # monotonic time the oldest row counts from
        self._fd: int | None = None
        self._end = 0  # bytes of whole records in the file
        self._torn = False  # an append failed midway: bytes past _end may be part of a record

    def append(self, batch: pa.RecordBatch) -> None:
        """Append `batch` to the file (the schema first, in a new file); if this raises, none of
        it counts: what it wrote is cut off, now or before the next append."""
        import pyarrow as pa

        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC, 0o644)
            self._end = 0
        if self._torn:
            os.ftruncate(self._fd, self._end)
            self._torn = False
        data = batch.serialize()
        if not self._end:
            data = pa.py_buffer(batch.schema.serialize().to_pybytes() + data.to_pybytes())
        self._torn = True
        try:
            view = memoryview(data)
            while view:  # an unbuffered write may take only part of the bytes
                view = view[os.write(self._fd, view) :]
        except BaseException:
            with contextlib.suppress(OSError):  # if the cut fails too, the next append makes it
                os.ftruncate(self._fd, self._end)
                self._torn = False
            raise
        self._torn = False
        self._end += data.size
        self.batches.append(batch)
        self.rows += batch.num_rows

    def close(self) -> None:
        """Close the file, cutting off a failed append; the file stays for the next open."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if self._torn:
                os.ftruncate(fd, self._end)
        finally:
            os.close(fd)

    def discard(self) -> None:
        """Close and remove the file: its rows are in their part. A file left behind is removed
        at the next open, which finds its part written."""
        try:
            self.close()
            self.path.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("ParquetSink: could not remove %s (%s); the next open will", self.path, exc)


class ParquetSink(Sink):
    """Writes Scalar, Metrics and Text events as Parquet part files under `run_dir` (see the
    module docstring for the schema and the guarantees).

    part_interval: most seconds a row waits staged before its part is written (> 0).
    part_rows: a part is written as soon as this many rows are staged (>= 1).
    compact: merge this session's parts into one file at close.
    job: a name written in the `job` column of every row (None: null).
    compression: Parquet codec of the parts ("zstd", "snappy", "gzip", "lz4", "none").
    """

    accepts = (Scalar, Metrics, Text)

    def __init__(
        self,
        run_dir: str | Path,
        *,
        part_interval: float = 5.0,
        part_rows: int = 1_000_000,
        compact: bool = False,
        job: str | None = None,
        compression: str = "zstd",
    ) -> None:
        if isinstance(part_interval, bool) or not isinstance(part_interval, int | float) or not 0 < part_interval < 1e9:
            raise InvalidConfig(f"part_interval must be a positive number of seconds, got {part_interval!r}")
        if isinstance(part_rows, bool) or not isinstance(part_rows, int) or part_rows < 1:
            raise InvalidConfig(f"part_rows must be an int >= 1, got {part_rows!r}")
        if job is not None and (not isinstance(job, str) or not job):
            raise InvalidConfig(f"job must be a non-empty str or None, got {job!r}")
        if compression not in ("zstd", "snappy", "gzip", "lz4", "none"):
            raise InvalidConfig(f"compression must be zstd, snappy, gzip, lz4 or none, got {compression!r}")
        self.run_dir = Path(run_dir)
        self.part_interval = float(part_interval)
        self.part_rows = part_rows
        self.compact = bool(compact)
        self.job = job
        self.compression = compression
        self.parts_written = 0
        self._reset()

    def _reset(self) -> None:
        self._origins: list[Origin] = []
        self._origin_ids: dict[Origin, int] = {}
        self._contexts: list[Context] = []
        self._context_ids: dict[Context, int] = {}
        self._origin_columns: tuple[Any, ...] = ((),)  # label, site, node, rank of each origin (pa.Array)
        self._next_part = 1
        self._staging = _Staging(self._staged_path(1))
        self._session: list[Path] = []  # parts this session wrote, for compaction
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._timer: threading.Thread | None = None
        self._closing = False
        self._timer_error: BaseException | None = None

    @property
    def output_dir(self) -> Path | None:
        return self.run_dir

    @property
    def name(self) -> str:
        return f"parquet:{self.run_dir.as_posix()}"

    def exclusive_paths(self) -> tuple[Path, ...]:
        """One writer per run directory (part numbers would clash): its lock file."""
        return (self.run_dir / LOCK_FILE,)

    def __getstate__(self) -> dict[str, Any]:
        """The state of an unopened copy, for a sink host: threads and locks do not pickle."""
        twin = ParquetSink(
            self.run_dir,
            part_interval=self.part_interval,
            part_rows=self.part_rows,
            compact=self.compact,
            job=self.job,
            compression=self.compression,
        )
        return {k: v for k, v in twin.__dict__.items() if k not in ("_lock", "_wake", "_timer")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._timer = None

    # ---- the Sink protocol ----

    async def open(self) -> None:
        import pyarrow  # noqa: F401  (fail here, at open, when the extra is missing)

        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._next_part = _recover(self.run_dir, self.compression) + 1
        self._staging = _Staging(self._staged_path(self._next_part))
        self._timer = threading.Thread(target=self._tick, name=f"metricbus parquet {self.run_dir}", daemon=True)
        self._timer.start()

    async def write_batch(self, events: Sequence[Event]) -> None:
        with self._lock:
            if self._due(time.monotonic()):
                self._write_part()  # if this fails, nothing of this batch is staged: the bus retries it
            batch = self._record_batch(events)
            if not batch.num_rows:
                return
            staging = self._staging
            first = not staging.rows
            staging.append(batch)  # whole or nothing: once it returns, the batch is on disk
            if first:
                # The interval counts from when the oldest row was logged: the time it took to reach
                # the sink (a batch interval, a host hop) counts, up to half the interval, so a
                # replay of old wall times still makes parts of half an interval, not one per batch.
                lag = min(max(time.time() - events[0].wall_time, 0.0), self.part_interval / 2)
                staging.since = time.monotonic() - lag
            if staging.rows >= self.part_rows:
                try:
                    self._write_part()
                except Exception as exc:  # the batch is staged (delivered): the timer or the next batch retries
                    log.warning("ParquetSink %s: could not write a part (%s); its rows stay staged", self.run_dir, exc)
            elif first:
                self._wake.notify()  # the timer learns of the new oldest row

    async def flush(self) -> None:
        with self._lock:
            self._write_part()

    async def close(self) -> None:
        """Write the last part; if that fails, its rows stay staged and become a part at the next
        open of the run directory."""
        with self._lock:
            self._closing = True
            self._wake.notify()
            try:
                self._write_part()
            finally:
                self._staging.close()
        if self._timer is not None:
            self._timer.join(timeout=5.0)
        if self.compact and len(self._session) > 1:
            _compact(self.run_dir, self._session, self.compression)

    # ---- rows ----

    def _add(self, rows: _Rows, events: Sequence[Event]) -> None:
        wall, origin_col, name_col, step_col = rows.wall, rows.origin, rows.name, rows.step
        value_col, context_col = rows.value, rows.context
        name_ids, names = rows.name_ids, rows.names
        origin_ids, context_ids = self._origin_ids, self._context_ids
        last_origin: Origin | None = None
        oid = 0
        for event in events:
            origin = event.origin
            if origin is not last_origin:
                last_origin = origin
                found = origin_ids.get(origin)
                if found is None:
                    found = origin_ids[origin] = len(self._origins)
                    self._origins.append(origin)
                oid = found
            context = event.context
            cid: int | None = None
            if context is not None:
                rows.any_context = True
                cid = context_ids.get(context)
                if cid is None:
                    cid = context_ids[context] = len(self._contexts)
                    self._contexts.append(context)
            if type(event) is Scalar:
                nid = name_ids.get(event.name)
                if nid is None:
                    nid = name_ids[event.name] = len(names)
                    names.append(event.name)
                wall.append(event.wall_time)
                origin_col.append(oid)
                name_col.append(nid)
                step_col.append(event.step)
                value_col.append(event.value)
                context_col.append(cid)
            elif type(event) is Metrics:
                n = len(event.values)
                wall.extend([event.wall_time] * n)
                origin_col.extend([oid] * n)
                for name in event.values:
                    nid = name_ids.get(name)
                    if nid is None:
                        nid = name_ids[name] = len(names)
                        names.append(name)
                    name_col.append(nid)
                step_col.extend([event.step] * n)
                value_col.extend(event.values.values())
                context_col.extend([cid] * n)
            elif type(event) is Text:
                rows.texts.append((len(name_col), event.text))
                nid = name_ids.get(event.name)
                if nid is None:
                    nid = name_ids[event.name] = len(names)
                    names.append(event.name)
                wall.append(event.wall_time)
                origin_col.append(oid)
                name_col.append(nid)
                step_col.append(event.step)
                value_col.append(None)
                context_col.append(cid)

    def _record_batch(self, events: Sequence[Event]) -> pa.RecordBatch:
        """The rows of `events`, in the schema of the parts."""
        import pyarrow as pa
        import pyarrow.compute as pc

        rows = _Rows()
        self._add(rows, events)
        n = len(rows)
        micros = pc.cast(pc.round(pc.multiply(_packed(pa.float64(), "d", rows.wall), 1e6)), pa.int64())
        origin_idx = _packed(pa.int32(), "i", rows.origin)
        if len(self._origin_columns[0]) != len(self._origins):  # a new origin since the last batch
            origins = self._origins
            self._origin_columns = (
                pa.array([o.label for o in origins], pa.string()),
                pa.array([o.site or None for o in origins], pa.string()),
                pa.array([o.node or None for o in origins], pa.string()),
                pa.array([o.rank for o in origins], pa.int64()),
            )
        texts: pa.Array
        if rows.texts:
            column: list[str | None] = [None] * n
            for row, text in rows.texts:
                column[row] = text
            texts = pa.array(column, pa.string())
            values = pa.array(rows.value, pa.float64())  # text rows have no value: null
        else:
            texts = pa.nulls(n, pa.string())
            values = _packed(pa.float64(), "d", rows.value)
        if rows.any_context:
            idx = pa.array(rows.context, pa.int32())
            ctx = self._contexts
            epoch = pc.take(pa.array([c.epoch for c in ctx], pa.int64()), idx)
            round_ = pc.take(pa.array([c.round for c in ctx], pa.int64()), idx)
            task = pc.take(pa.array([c.task for c in ctx], pa.string()), idx)
        else:
            epoch, round_, task = pa.nulls(n, pa.int64()), pa.nulls(n, pa.int64()), pa.nulls(n, pa.string())
        columns = [
            micros.cast(pa.timestamp("us", tz="UTC")),
            *(pc.take(column, origin_idx) for column in self._origin_columns),
            pa.nulls(n, pa.string()) if self.job is None else pa.array([self.job] * n, pa.string()),
            pc.take(pa.array(rows.names, pa.string()), _packed(pa.int32(), "i", rows.name)),
            _packed(pa.int64(), "q", rows.step),
            values,
            texts,
            epoch,
            round_,
            task,
        ]
        return pa.RecordBatch.from_arrays(columns, schema=parquet_schema())

    def _staged_path(self, part: int) -> Path:
        return self.run_dir / f".part-{part:06d}.arrows"

    def _due(self, now: float) -> bool:
        """Whether the staged rows are due to become a part (the caller holds the lock)."""
        staging = self._staging
        return staging.rows > 0 and (staging.rows >= self.part_rows or now - staging.since >= self.part_interval)

    def _write_part(self) -> None:
        """Write the staged rows as the next part, then start staging the one after (the caller
        holds the lock). If this raises, the rows stay staged."""
        staging = self._staging
        if not staging.rows:
            return
        import pyarrow as pa

        path = self.run_dir / f"part-{self._next_part:06d}.parquet"
        _write_part_file(path, pa.Table.from_batches(staging.batches, schema=parquet_schema()), self.compression)
        self._next_part += 1
        self._session.append(path)
        self.parts_written += 1
        self._staging = _Staging(self._staged_path(self._next_part))
        staging.discard()

    def _tick(self) -> None:
        """The timer thread: writes the waiting rows once the oldest is `part_interval` old."""
        backoff = 0.0
        with self._lock:
            while not self._closing:
                staging = self._staging
                if not staging.rows:
                    self._wake.wait()
                    continue
                due = 0.0 if staging.rows >= self.part_rows else staging.since + self.part_interval - time.monotonic()
                due += backoff
                if due > 0:
                    self._wake.wait(due)
                    continue
                try:
                    self._write_part()
                    backoff, self._timer_error = 0.0, None
                except Exception as exc:  # an outage (a full disk): the rows stay staged, the next batch retries too
                    if self._timer_error is None:
                        log.warning("ParquetSink %s: could not write a part (%s); retrying", self.run_dir, exc)
                    self._timer_error = exc
                    backoff = min(max(2 * backoff, 0.5), 30.0)


def _write_part_file(path: Path, table: pa.Table, compression: str) -> None:
    import pyarrow.parquet as pq

    _write_then_rename(path, lambda tmp: pq.write_table(table, tmp, compression=compression))


def _write_then_rename(path: Path, write: Any) -> None:
    """Write `path` through a hidden temporary file in the same directory, then rename it."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _part_range(path: Path) -> tuple[int, int] | None:
    match = _PART.fullmatch(path.name)
    if match is None:
        return None
    first = int(match.group(1))
    return first, int(match.group(2) or first)


def _recover(run_dir: Path, compression: str) -> int:
    """The last part number used in `run_dir`, once what a killed writer left is resolved: its
    temporary files are removed, so are the parts that a compacted file already holds (killed
    while compacting); its staged rows become their part, unless that part was written already
    (killed before the staging file was removed)."""
    ranges: dict[Path, tuple[int, int]] = {}
    staged: dict[int, Path] = {}
    for path in run_dir.iterdir():
        if path.name.startswith(".part-") and path.name.endswith(".tmp"):
            path.unlink(missing_ok=True)
        elif (found := _part_range(path)) is not None:
            ranges[path] = found
        elif (match := _STAGED.fullmatch(path.name)) is not None:
            staged[int(match.group(1))] = path
    compacted = [r for r in ranges.values() if r[0] != r[1]]
    for path, (first, last) in list(ranges.items()):
        if first == last and any(a <= first <= b for a, b in compacted):
            log.warning("ParquetSink: %s is already in a compacted file; removing it", path)
            path.unlink(missing_ok=True)
    for number, path in sorted(staged.items()):
        if not any(a <= number <= b for a, b in ranges.values()):
            table = _read_staged(path)
            if table.num_rows:
                part = run_dir / f"part-{number:06d}.parquet"
                _write_part_file(part, table, compression)
                ranges[part] = (number, number)
                log.warning("ParquetSink: %d rows a killed writer staged are now %s", table.num_rows, part)
        path.unlink()
    return max((last for _, last in ranges.values()), default=0)


def _read_staged(path: Path) -> pa.Table:
    """The whole record batches of a staging file, in the schema of the parts; a torn last one
    (the writer was killed mid-append) is left out, with a warning."""
    import pyarrow as pa

    source = pa.memory_map(str(path))
    reader = pa.ipc.MessageReader.open_stream(source)
    schema: pa.Schema | None = None
    batches: list[pa.RecordBatch] = []
    end = 0
    try:
        while True:
            message = reader.read_next_message()
            if schema is None:
                schema = pa.ipc.read_schema(message)
            else:
                batches.append(pa.ipc.read_record_batch(message, schema))
            end = source.tell()
    except StopIteration:
        pass
    except (pa.ArrowInvalid, OSError) as exc:
        log.warning("ParquetSink: %s: cut off %d bytes of a torn last record (%s)", path, source.size() - end, exc)
    if schema is None or not batches:
        return parquet_schema().empty_table()
    table = pa.Table.from_batches(batches, schema=schema)
    return table if schema.equals(parquet_schema(), check_metadata=True) else table.cast(parquet_schema())


def _compact(run_dir: Path, parts: list[Path], compression: str) -> None:
    """Merge `parts` (numbered in order) into one file named after their range, then remove them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    first, last = _part_range(parts[0]), _part_range(parts[-1])
    assert first is not None and last is not None
    target = run_dir / f"part-{first[0]:06d}-{last[1]:06d}.parquet"

    def write(tmp: Path) -> None:
        with pq.ParquetWriter(tmp, parquet_schema(), compression=compression) as writer:
            pending: list[pa.Table] = []
            rows = 0
            for part in parts:
                table = pq.read_table(part, schema=parquet_schema())
                pending.append(table)
                rows += table.num_rows
                if rows >= _COMPACT_ROWS:
                    writer.write_table(pa.concat_tables(pending))
                    pending, rows = [], 0
            if pending:
                writer.write_table(pa.concat_tables(pending))

    _write_then_rename(target, write)
    for part in parts:
        part.unlink(missing_ok=True)
