"""`metricbus replay`: old logs published again, exactly, into any sinks.

A JSONL log written by JsonlSink or a TensorBoard logdir is read back into events and published
onto a MetricBus in large batches (`publish_many`), so one recorded run can be turned into CSV,
another JSONL file, TensorBoard runs, W&B or MLflow after the fact. Origin, step and wall time
are kept exactly as recorded.

Sources are told apart by their path (`detect_kind`):

- `*.jsonl`: a JsonlSink log, read in 4 MiB blocks, each decoded by one msgspec call. A block
  with a bad line in it is decoded again line by line, so every bad line (bad JSON, an event that
  fails validation, a torn last line) is counted with its line number and the rest replayed.
- a directory, or a file named `events.out.tfevents.*`: TensorBoard, read with TensorBoard's own
  record reader (`RawEventFileLoader`: it checks every crc32c) and its Event protos. Scalars
  (simple values and scalar tensors), histograms, text, hparams and torch's `add_tensor` tensors
  become events; what has no
  metricbus event (images, audio, graphs, ...) is counted in `SourceStats.skipped`. A file that
  ends in a torn or corrupt record is replayed up to it, and the rest is reported as bad.

Another kind of source (a directory of spool segments, as bus/_spool.py writes them) is one
reader away: add its name to `SourceKind`, a case to `detect_kind` (before the directory case),
`_size` and `_reader`, and a function `reader(path, stats) -> Batches` (a generator of event
lists) that counts what it cannot read in `stats`. mypy checks that every `match` on the kind
stays exhaustive.

TensorBoard runs map back to origins the way TensorBoardSink lays them out (see
`origin_from_run`): the logdir itself is the default origin, `site-1` is
`Origin(site="site-1")`, `site-1/rank0` is `Origin(site="site-1", rank=0)`, `site-1/node-a/rank0`
is `Origin(site="site-1", node="node-a", rank=0)`, `node=node0/rank3` is
`Origin(node="node0", rank=3)`: every run TensorBoardSink writes maps back to its origin
(`Origin.from_label`). TensorBoard stores scalars as float32, so values from TensorBoard are the
float32 values it holds; wall times (doubles) and steps (int64) are exact.

Replay is lossless: every sink blocks when its buffer is full (a plan's `when_full` is ignored),
so the replay goes at the pace of the slowest sink, and `ReplayStats.ok` says whether every sink
got every event it accepts.

Replay is not live traffic: a sink with a rate limit in time (W&B's default 10 rows a second, or
a plan's `per_second`) gets every step, since windows of a recorded run's wall times (2,000 steps
logged in 0.1 s would be one row) say nothing about the pace the sink can take; a rate limit in
steps (`every=k`) is kept, and reduces by steps as it would live (`replay_rate`).
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

import anyio
import anyio.to_thread
import msgspec
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

from bus import (
    DEFAULT_ORIGIN,
    Event,
    Histogram,
    Hparams,
    InvalidConfig,
    InvalidEvent,
    MetricBus,
    Metrics,
    Origin,
    RateLimit,
    Scalar,
    Sink,
    SinkStats,
    Tensor,
    Text,
    delivery_failures,
)
from sinks import CallbackSink, CsvSink, JsonlSink

from ._plan import load_plan
from ._stats_table import print_stats

__all__ = [
    "BadRecord",
    "ReplayStats",
    "SourceKind",
    "SourceStats",
    "detect_kind",
    "origin_from_run",
    "read_jsonl_events",
    "read_tensorboard_events",
    "replay",
    "replay_command",
    "replay_rate",
    "sink_from_spec",
    "tensorboard_runs",
]

SourceKind = Literal["jsonl", "tensorboard", "spool"]
SinkEntry = Sink | tuple[Sink, Mapping[str, Any]]
Batches = Generator[list[Event], None, None]
Reader = Callable[[Path, "SourceStats"], Batches]

#: Bad lines/records kept per source, with where and why; all of them are counted.
MAX_REPORTED = 10
#: add_sink options of a replay, unless the caller's options say otherwise. `when_full` is
#: always "block": a replay that dropped events would be a wrong copy.
SINK_DEFAULTS: Mapping[str, Any] = {"capacity": 100_000, "max_batch": 10_000}
SPECS = ("csv:PATH", "jsonl:PATH", "parquet:DIR", "tensorboard:DIR", "wandb:PROJECT", "mlflow:URI")

_BLOCK = 4 << 20  # bytes of JSONL decoded per msgspec call (~37,000 scalar events)
_TB_BATCH = 10_000  # events per publish_many from TensorBoard files
_TB_PREFIX = "events.out.tfevents."
_RECORD_FRAME = 16  # a TFRecord's length (8), its crc (4) and the data's crc (4)
_TEXT_SUFFIX = "/text_summary"  # tensorboardX's text() appends it to the tag
_MLFLOW = "MLflowSink"  # looked up by name, when asked for: a tree without it (or mlflow) still replays
# lax mode turns JsonlSink's "NaN"/"Infinity" strings back into floats
_decoder: msgspec.json.Decoder[Event] = msgspec.json.Decoder(Event, strict=False)  # type: ignore[arg-type]


@dataclass(frozen=True)
class BadRecord:
    """A line (JSONL) or record (TensorBoard) that could not be replayed, and why."""

    file: str
    position: int  # JSONL: the line number; TensorBoard: the record number in `file`; both from 1
    reason: str


@dataclass
class SourceStats:
    """What replay made of one source: bytes read, events published, what it could not read."""

    path: str
    kind: SourceKind
    size: int  # bytes to read
    read: int = 0
    events: int = 0
    bad: int = 0  # every bad line/record; the first MAX_REPORTED are in first_bad
    first_bad: list[BadRecord] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)  # valid data with no metricbus event, by kind

    def add_bad(self, file: str, position: int, reason: str) -> None:
        self.bad += 1
        if len(self.first_bad) < MAX_REPORTED:
            self.first_bad.append(BadRecord(file, position, reason))

    def skip(self, what: str) -> None:
        self.skipped[what] = self.skipped.get(what, 0) + 1


@dataclass(frozen=True)
class ReplayStats:
    """The sources' stats and the sinks' final stats of one replay."""

    sources: list[SourceStats]
    sinks: dict[str, SinkStats]
    seconds: float

    @property
    def events(self) -> int:
        return sum(s.events for s in self.sources)

    @property
    def bad(self) -> int:
        return sum(s.bad for s in self.sources)

    @property
    def ok(self) -> bool:
        """True when every sink got every event it accepts (or its rate limit folded it into a
        row), by the rule of `bus.delivery_failures`."""
        return not delivery_failures(self.sinks)


# ---- the replay ----


def replay(
    sources: Iterable[str | Path],
    sinks: Iterable[SinkEntry],
    *,
    progress: TextIO | None = None,
    shutdown_timeout: float = 30.0,
) -> ReplayStats:
    """Publish every event of `sources`, in order, into `sinks` and return what happened.

    `sinks` are Sinks or (sink, add_sink options) pairs, such as `load_plan(path).sinks`; options
    default to SINK_DEFAULTS, `when_full` is always "block" and a rate limit in time is not
    applied (`replay_rate`). `progress`: a stream to draw a
    rich progress bar on, one line per source, named by its file name. Raises InvalidConfig
    before anything is written if a source is missing, of no known kind, or a logdir without
    event files.
    """
    opened = [_open_source(Path(s)) for s in sources]
    bus = MetricBus(shutdown_timeout=shutdown_timeout, raise_on_loss=False)
    for entry in sinks:
        sink, options = entry if isinstance(entry, tuple) else (entry, {})
        rate = replay_rate(sink, options.get("rate"))
        bus.add_sink(sink, **{**SINK_DEFAULTS, **options, "when_full": "block", "rate": rate})
    if not bus.sink_names:
        raise InvalidConfig("nothing to replay into: give at least one sink")
    events = TextColumn("{task.fields[events]:,} events")
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), events, TimeElapsedColumn())
    start = time.perf_counter()
    with Progress(*columns, console=Console(file=progress), disable=progress is None) as bar:
        anyio.run(_publish_all, bus, opened, bar, backend="asyncio")
    return ReplayStats(sources=opened, sinks=dict(bus.stats()), seconds=time.perf_counter() - start)


def replay_rate(sink: Sink, rate: RateLimit | Literal["none"] | None) -> RateLimit | Literal["none"]:
    """The rate limit a replay gives `sink`, given the `rate` option it was added with (None: the
    sink's own): a limit in steps as it is, no limit for one in time or none."""
    chosen = sink.rate if rate is None else rate
    if chosen == "none" or chosen is None or chosen.per_second is not None:
        return "none"
    return chosen


async def _publish_all(bus: MetricBus, sources: list[SourceStats], bar: Progress) -> None:
    async with bus:
        for stats in sources:
            await _publish_source(bus, stats, bar)
        await bus.flush()  # no deadline: a big backlog drains fully; a hung sink fails at its call_timeout


async def _publish_source(bus: MetricBus, stats: SourceStats, bar: Progress) -> None:
    """Read batches on a worker thread, so that decoding the next one never holds up the bus's
    loop handing the last one to the sinks."""
    task = bar.add_task(Path(stats.path).name, total=stats.size, events=0)
    batches = _reader(stats.kind)(Path(stats.path), stats)
    try:
        while (batch := await anyio.to_thread.run_sync(next, batches, None)) is not None:
            await bus.publish_many(batch)
            stats.events += len(batch)
            bar.update(task, completed=stats.read, events=stats.events)
    finally:
        batches.close()


# ---- sources ----


def detect_kind(path: Path) -> SourceKind:
    """What a source is, by its path: a directory of `segment-*.msgpack` files is a sink's spool
    (what `when_full="spill"` or a failed sink left), another directory or an
    `events.out.tfevents.*` file is TensorBoard, a `*.jsonl` file a JsonlSink log."""
    if not path.exists():
        raise InvalidConfig(f"source {path}: no such file or directory")
    if path.is_dir() and any(path.glob("segment-*.msgpack")):
        return "spool"
    if path.is_dir() or path.name.startswith(_TB_PREFIX):
        return "tensorboard"
    if path.suffix == ".jsonl":
        return "jsonl"
    raise InvalidConfig(f"source {path}: not a *.jsonl file, an {_TB_PREFIX}* file or a TensorBoard logdir")


def _open_source(path: Path) -> SourceStats:
    kind = detect_kind(path)
    return SourceStats(path=str(path), kind=kind, size=_size(path, kind))


def _size(path: Path, kind: SourceKind) -> int:
    match kind:
        case "jsonl":
            return path.stat().st_size
        case "tensorboard":
            return sum(f.stat().st_size for _, files in tensorboard_runs(path) for f in files)
        case "spool":
            return sum(f.stat().st_size for f in path.glob("segment-*.msgpack"))


def _reader(kind: SourceKind) -> Reader:
    match kind:
        case "jsonl":
            return read_jsonl_events
        case "tensorboard":
            return read_tensorboard_events
        case "spool":
            return read_spool_events


# ---- a sink's spool ----


def read_spool_events(path: Path, stats: SourceStats) -> Batches:
    """The events a spool directory holds, oldest first, one batch per segment file. The
    segments stay where they are: a replay copies, it does not take them away."""
    from bus import read_segments

    for size, events in read_segments(path):
        stats.read += size
        yield events


# ---- JSONL ----


def read_jsonl_events(path: Path, stats: SourceStats) -> Batches:
    """Batches of events from a JsonlSink log, one per 4 MiB block of whole lines. Bad lines are
    counted in `stats` with their line numbers; a last line without a newline that does not
    decode is reported as torn (its writer was cut off)."""
    where = str(path)
    lines_before = 0
    tail = b""
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            stats.read += len(block)
            data = tail + block if tail else block
            end = data.rfind(b"\n") + 1
            tail = data[end:]
            if end:
                whole = data[:end]
                yield _decode_lines(whole, lines_before, where, stats)
                lines_before += whole.count(b"\n")
    if tail.strip():
        try:
            yield [_decoder.decode(tail)]
        except Exception as exc:  # see _decode_lines
            reason = f"torn last line (no newline after it: was its writer killed?): {exc}"
            stats.add_bad(where, lines_before + 1, reason)


def _decode_lines(data: bytes, lines_before: int, where: str, stats: SourceStats) -> list[Event]:
    """The events of whole lines: one msgspec call, or, when some line is bad, one per line.

    Bad JSON and invalid events (InvalidEvent, raised in __post_init__) arrive as
    msgspec.DecodeError; anything else a line makes a constructor raise counts as bad too: a
    replay never stops for its input.
    """
    try:
        return _decoder.decode_lines(data)
    except Exception:
        pass
    events: list[Event] = []
    for number, line in enumerate(data.split(b"\n"), start=lines_before + 1):
        if line.strip():
            try:
                events.append(_decoder.decode(line))
            except Exception as exc:
                stats.add_bad(where, number, str(exc))
    return events


# ---- TensorBoard ----


def tensorboard_runs(path: Path) -> list[tuple[Origin, list[Path]]]:
    """Each run under a logdir (a directory holding event files) with its origin and its event
    files in name order (their names start with the time they were created), runs in path order.
    An event file given by itself is one run of the default origin."""
    if path.is_file():
        return [(DEFAULT_ORIGIN, [path])]
    runs: dict[Path, list[Path]] = {}
    for file in sorted(path.rglob(f"{_TB_PREFIX}*")):
        if file.is_file():
            runs.setdefault(file.parent, []).append(file)
    if not runs:
        raise InvalidConfig(f"source {path}: a directory without TensorBoard event files ({_TB_PREFIX}*)")
    return [(origin_from_run(run.relative_to(path).as_posix()), files) for run, files in sorted(runs.items())]


MAIN = "main"  # Origin.label of the default origin; TensorBoardSink writes that one into the logdir itself
_RANK = re.compile(r"rank(0|[1-9][0-9]*)")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")


def origin_from_run(run: str) -> Origin:
    """The origin whose events TensorBoardSink writes into the run `run` (a path relative to the
    logdir, '/'-separated): the inverse of `Origin.label`, and a best guess for other writers' runs.

    - "" or "." (the logdir itself) -> the default origin;
    - a label (`site-1/rank0`, `node=node0/rank3`, `site=main`, ...) -> its origin exactly;
    - "main" -> Origin(site="main"): it is not the logdir itself, so it is not the default origin;
    - any other run: a last part `rank<N>` -> rank N; the first other part -> the site, the second
      -> the node, any more joined to the node with "." ("exp/seed0/train" -> site "exp", node
      "seed0.train"); characters an origin cannot hold become "_" and parts are cut to 128.
    """
    parts = [p for p in run.split("/") if p not in ("", ".")]
    if not parts:
        return DEFAULT_ORIGIN
    label = "/".join(parts)
    if label != MAIN:
        try:
            return Origin.from_label(label)
        except InvalidEvent:
            pass
    rank = None
    if match := _RANK.fullmatch(parts[-1]):
        rank = int(match.group(1))
        parts.pop()
    names = [_UNSAFE.sub("_", p)[:128] for p in parts]
    return Origin(site=names[0] if names else "", node=".".join(names[1:])[:128], rank=rank)


def read_tensorboard_events(path: Path, stats: SourceStats) -> Batches:
    """Batches of events from every run under a logdir (or one event file), run by run, each
    file in record order."""
    for origin, files in tensorboard_runs(path):
        for file in files:
            yield from _read_event_file(file, origin, stats)


def _read_event_file(file: Path, origin: Origin, stats: SourceStats) -> Batches:
    """TensorBoard's reader stops quietly at a torn or corrupt record; the bytes it consumed
    (each record's data plus its 16-byte frame) tell whether it reached the end of the file."""
    from google.protobuf.message import DecodeError
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto.event_pb2 import Event as EventProto

    where = str(file)
    size = file.stat().st_size  # the file may grow while it is read (a live run): what was there
    consumed = reported = record = 0
    batch: list[Event] = []
    for data in RawEventFileLoader(where).Load():
        record += 1
        consumed += len(data) + _RECORD_FRAME
        try:
            proto = EventProto.FromString(data)
        except DecodeError as exc:
            stats.add_bad(where, record, f"not an Event protobuf: {exc}")
            continue
        batch.extend(_events_of(proto, origin, stats, where, record))
        if len(batch) >= _TB_BATCH:
            stats.read += consumed - reported
            reported = consumed
            yield batch
            batch = []
    stats.read += consumed - reported
    if consumed < size:
        stats.add_bad(
            where, record + 1, f"torn or corrupt record at byte {consumed:,} of {size:,}: the rest was not replayed"
        )
    if batch:
        yield batch


def _events_of(proto: Any, origin: Origin, stats: SourceStats, where: str, record: int) -> list[Event]:
    """The events of one TensorBoard Event: its scalar values as one Scalar (one value) or one
    Metrics (several, as TensorBoardSink writes a Metrics), then its histograms, text, hparams."""
    what = proto.WhichOneof("what")
    if what != "summary":
        if what not in (None, "file_version"):  # file_version: the header record of every file
            stats.skip(what)
        return []
    head: dict[str, Any] = {"step": proto.step, "wall_time": proto.wall_time, "origin": origin}
    scalars: dict[str, float] = {}
    events: list[Event] = []
    for value in proto.summary.value:
        plugin = value.metadata.plugin_data.plugin_name
        try:
            match value.WhichOneof("value"), plugin:
                case "simple_value", _:
                    scalars[value.tag] = value.simple_value
                case "tensor", "scalars":
                    scalars[value.tag] = float(_array(value.tensor).item())
                case "histo", _ if value.histo.bucket:
                    limits, counts = tuple(value.histo.bucket_limit), tuple(value.histo.bucket)
                    events.append(Histogram(value.tag, bucket_limits=limits, bucket_counts=counts, **head))
                case "tensor", "histograms" if value.tensor.tensor_shape.dim[0].size:  # rows: left, right, count
                    buckets = _array(value.tensor).tolist()
                    limits, counts = tuple(b[1] for b in buckets), tuple(b[2] for b in buckets)
                    events.append(Histogram(value.tag, bucket_limits=limits, bucket_counts=counts, **head))
                case "tensor", "tensor":  # torch's add_tensor
                    events.append(Tensor(value.tag, **_tensor_fields(value.tensor), **head))
                case "tensor", "text" if len(value.tensor.string_val) == 1:
                    name = value.tag.removesuffix(_TEXT_SUFFIX)
                    events.append(Text(name, value.tensor.string_val[0].decode("utf-8", "replace"), **head))
                case _, "hparams":
                    events.extend(_hparams(value.metadata.plugin_data.content, head))
                case kind, _:
                    stats.skip(plugin or kind or "empty value")
        except Exception as exc:  # an invalid event or a malformed tensor costs this value only
            stats.add_bad(where, record, f"{value.tag!r}: {exc}")
    if scalars:
        try:
            if len(scalars) == 1:
                ((name, number),) = scalars.items()
                events.insert(0, Scalar(name, number, **head))
            else:
                events.insert(0, Metrics(scalars, **head))
        except Exception as exc:
            stats.add_bad(where, record, str(exc))
    return events


# a TensorProto's dtype -> the Tensor event's dtype and how its values are stored as bytes
_PROTO_DTYPES = {
    "DT_HALF": ("float16", "<f2"),
    "DT_BFLOAT16": ("bfloat16", "<u2"),
    "DT_FLOAT": ("float32", "<f4"),
    "DT_DOUBLE": ("float64", "<f8"),
    "DT_INT8": ("int8", "<i1"),
    "DT_UINT8": ("uint8", "<u1"),
    "DT_INT16": ("int16", "<i2"),
    "DT_INT32": ("int32", "<i4"),
    "DT_INT64": ("int64", "<i8"),
    "DT_BOOL": ("bool", "?"),
    "DT_COMPLEX64": ("complex64", "<f4"),
    "DT_COMPLEX128": ("complex128", "<f8"),
}
_VALUE_FIELDS = ("half_val", "float_val", "double_val", "int_val", "uint32_val", "int64_val", "bool_val")
_HALF_BITS = 0xFFFF


def _tensor_fields(tensor: Any) -> dict[str, Any]:
    """A Tensor event's data, dtype and shape from a TensorProto: the fields torch's add_tensor
    fills (float16 and bfloat16 as the bits of a float32 in half_val) or TensorFlow's raw
    tensor_content / 16-bit half_val."""
    import numpy as np
    from tensorboard.compat.proto.types_pb2 import DataType

    dtype, layout = _PROTO_DTYPES[DataType.Name(tensor.dtype)]
    shape = tuple(dim.size for dim in tensor.tensor_shape.dim)
    if tensor.tensor_content:
        return {"data": tensor.tensor_content, "dtype": dtype, "shape": shape}
    values: Any = next((getattr(tensor, f) for f in _VALUE_FIELDS if len(getattr(tensor, f))), [])
    if dtype.startswith("complex"):
        values = tensor.scomplex_val if dtype == "complex64" else tensor.dcomplex_val
    array = np.asarray(values)
    if dtype in ("float16", "bfloat16"):
        if array.size and (array.min() < 0 or array.max() > _HALF_BITS):  # torch: struct.pack("f", x) as an int
            as_float = array.astype("<i4").view("<f4")
            array = as_float.astype("<f2").view("<u2") if dtype == "float16" else as_float.view("<u4") >> 16
        layout = "<u2"  # the 16-bit patterns (TensorFlow writes them as they are)
    return {"data": array.astype(layout).tobytes(), "dtype": dtype, "shape": shape}


def _array(tensor: Any) -> Any:
    from tensorboard.util import tensor_util

    return tensor_util.make_ndarray(tensor)


def _hparams(content: bytes, head: dict[str, Any]) -> list[Event]:
    """An Hparams from the session start record; the experiment and session end records belong
    to it and give nothing more. Params come back as TensorBoard keeps them (ints as floats), and
    without the metrics: TensorBoard holds those as plain scalar series, replayed as such."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    data = plugin_data_pb2.HParamsPluginData.FromString(content)
    if data.WhichOneof("data") != "session_start_info":
        return []
    params: dict[str, str | float | int | bool] = {}
    for name, value in data.session_start_info.hparams.items():
        match value.WhichOneof("kind"):
            case "number_value":
                params[name] = value.number_value
            case "string_value":
                params[name] = value.string_value
            case "bool_value":
                params[name] = value.bool_value
    return [Hparams(params, **head)]


# ---- targets ----


def sink_from_spec(spec: str) -> Sink:
    """A sink from a `--to` shorthand: csv:PATH, jsonl:PATH, parquet:DIR (a run directory of part
    files, for `metricbus query`), tensorboard:DIR, wandb:PROJECT (offline) or mlflow:URI
    (sinks.MLflowSink with tracking_uri=URI)."""
    kind, _, where = spec.partition(":")
    if not where:
        raise InvalidConfig(f"--to {spec!r}: expected KIND:WHERE, one of {', '.join(SPECS)}")
    match kind:
        case "csv":
            return CsvSink(where)
        case "jsonl":
            return JsonlSink(where)
        case "parquet":
            from sinks import ParquetSink

            return ParquetSink(where)
        case "tensorboard":
            from sinks import TensorBoardSink

            return TensorBoardSink(where)
        case "wandb":
            from sinks import WandbSink

            return WandbSink(project=where, mode="offline")
        case "mlflow":
            return _mlflow_sink(where)
        case _:
            raise InvalidConfig(f"--to {spec!r}: unknown kind {kind!r}; expected one of {', '.join(SPECS)}")


def _mlflow_sink(uri: str) -> Sink:
    import sinks

    try:
        factory = getattr(sinks, _MLFLOW)
    except AttributeError:
        raise InvalidConfig(
            f"--to mlflow:{uri}: this metricbus has no sinks.{_MLFLOW}; declare an MLflow sink in a plan file instead"
        ) from None
    except ImportError as exc:
        raise InvalidConfig(
            f"--to mlflow:{uri}: sinks.{_MLFLOW} cannot be loaded ({exc}); is mlflow installed?"
        ) from exc
    try:
        sink: Sink = factory(tracking_uri=uri)
    except (TypeError, ValueError) as exc:
        raise InvalidConfig(f"--to mlflow:{uri}: sinks.{_MLFLOW}(tracking_uri={uri!r}) failed: {exc}") from exc
    return sink


# ---- the command ----


def replay_command(
    sources: Sequence[Path],
    *,
    plan: Path | None = None,
    targets: Sequence[str] = (),
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """`metricbus replay`: into a plan's sinks (and its callback) or the `--to` targets. A progress
    bar on `err` when it is a terminal, and one summary line there at the end; bad lines and the
    sinks' stats on `out`. Returns 0 when every sink got every event, else 1."""
    out, err = out or sys.stdout, err or sys.stderr
    entries: list[SinkEntry] = []
    if plan is not None:
        loaded = load_plan(plan)  # its [[producers]] are not run: the sources are the input
        entries += loaded.sinks
        if loaded.callback is not None:
            entries.append(CallbackSink(loaded.callback))
    entries += [sink_from_spec(spec) for spec in targets]
    stats = replay(sources, entries, progress=err if err.isatty() else None)
    print_report(stats, Console(file=out))
    err.write(summary_line(stats) + "\n")
    return 0 if stats.ok else 1


def summary_line(stats: ReplayStats) -> str:
    rate = stats.events / stats.seconds if stats.seconds > 0 else 0.0
    verdict = "every sink got every event" if stats.ok else "some sinks did not get every event"
    return (
        f"replayed {stats.events:,} events from {len(stats.sources)} source(s) in {stats.seconds:.2f} s "
        f"({rate:,.0f} events/s), {stats.bad:,} bad lines/records not replayed; {verdict}"
    )


def print_report(stats: ReplayStats, console: Console) -> None:
    """Per source, the bad lines/records (the first MAX_REPORTED) and what was skipped; then the
    per-sink stats table (producers/_stats_table.py)."""
    for source in stats.sources:
        unit = "lines" if source.kind == "jsonl" else "records"
        if source.bad:
            console.print(f"{source.path}: {source.bad:,} bad {unit} not replayed", style="yellow", markup=False)
            for bad in source.first_bad:
                console.print(f"  {bad.file}: {unit[:-1]} {bad.position}: {bad.reason}", markup=False, highlight=False)
            if source.bad > len(source.first_bad):
                console.print(f"  ... and {source.bad - len(source.first_bad):,} more", markup=False)
        if source.skipped:
            kinds = ", ".join(f"{what} x{n:,}" for what, n in sorted(source.skipped.items()))
            console.print(f"{source.path}: not replayed (no metricbus event for them): {kinds}", markup=False)
    print_stats(stats.sinks, console=console, title="replay: sinks")
