"""TensorBoardSink: TensorBoard event files written in batches, one run per origin.

Scalars are the hot path, so their Event protobuf (wall_time, step, one Summary) is encoded by
hand: a double, a varint and a float around bytes cached per tag, framed as a TFRecord with
crc32c. A test checks those bytes against tensorboardX's protobuf classes, which build the rare
kinds (histograms, text, hparams, images, chart layouts). Images arrive as raw pixels and are
encoded as PNG here (`sinks._png.encode_png`, zlib only), off the training thread. Each batch becomes one
write per run, flushed at the end of the batch, so a live TensorBoard shows new points within
the bus's `max_interval`.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import socket
import struct
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO, ClassVar, Literal

import crc32c

from bus import (
    DEFAULT_ORIGIN,
    Audio,
    ChartLayout,
    Embedding,
    Event,
    Graph,
    Histogram,
    Hparams,
    Image,
    Mesh,
    Metrics,
    Origin,
    PrCurve,
    RunConfig,
    RunSummary,
    Scalar,
    Sink,
    Tensor,
    Text,
    Video,
    check_folder,
)

from ._open_set import OpenSet
from ._png import encode_png
from ._tb_media import graph_events, media_summary, tensor_summary, write_projector

__all__ = ["MAX_OPEN_RUNS", "TensorBoardSink", "encode_record"]

log = logging.getLogger("metricbus")

_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
_F32 = struct.Struct("<f")
_EVENT_HEAD = struct.Struct("<Bd")  # Event field 1 (wall_time, a double): key byte 0x09, value
_MAX_STEP = 2**63 - 1  # Event.step is an int64: beyond it a varint would wrap to another step
_CACHED_HEADER_MAX = 4096  # record lengths worth caching; bigger ones are rare (text, histograms)
_file_ids = itertools.count()  # one per file in this process: two sinks never share a file name
#: Event files a sink keeps open by default: room for 128 origins without reopening, well under
#: the common limit of 1,024 file descriptors per process.
MAX_OPEN_RUNS = 128


def _masked_crc(data: bytes) -> int:
    crc = crc32c.crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def encode_record(data: bytes) -> bytes:
    """One TFRecord: length, masked crc32c of the length, data, masked crc32c of the data."""
    header = _U64.pack(len(data))
    return header + _U32.pack(_masked_crc(header)) + data + _U32.pack(_masked_crc(data))


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _f32(value: float) -> bytes:
    """The float32 TensorBoard stores; finite values that round beyond its range become ±inf."""
    try:
        return _F32.pack(value)
    except OverflowError:
        return _F32.pack(math.copysign(math.inf, value))


class _Headers(dict[int, bytes]):
    """A record's first 12 bytes (length, masked crc of it) per length: scalar records of one
    tag have one or two lengths, so their header crc is computed once."""

    def __missing__(self, length: int) -> bytes:
        header = _U64.pack(length)
        header += _U32.pack(_masked_crc(header))
        if length < _CACHED_HEADER_MAX:
            self[length] = header
        return header

    def frame(self, data: bytes) -> bytes:
        return self[len(data)] + data + _U32.pack(_masked_crc(data))


class _ValuePrefixes(dict[str, bytes]):
    """Summary.value entry up to its float, per tag: key, length, tag field, simple_value key."""

    def __missing__(self, tag: str) -> bytes:
        raw = tag.encode("utf-8")
        body = b"\x0a" + _varint(len(raw)) + raw + b"\x15"
        prefix = self[tag] = b"\x0a" + _varint(len(body) + 4) + body
        return prefix


class _ScalarPrefixes(dict[str, bytes]):
    """Event.summary (field 5) up to the float of its one value, per tag."""

    def __init__(self, values: _ValuePrefixes) -> None:
        super().__init__()
        self.value_prefixes = values

    def __missing__(self, tag: str) -> bytes:
        value = self.value_prefixes[tag]
        prefix = self[tag] = b"\x2a" + _varint(len(value) + 4) + value
        return prefix


class _Run:
    """The event file of one origin's run. Records wait in `pending` until a batch is encoded;
    the file is open only while the run is in the sink's open set, and is reopened to append
    (TensorBoard reads records appended to a file it has read before)."""

    def __init__(self, directory: Path, suffix: str) -> None:
        host, pid, file_id = socket.gethostname(), os.getpid(), next(_file_ids)
        # TensorBoard reads a run's files in name order: after the second, the zero-padded
        # nanosecond keeps two files of one second (a framework's next stage, another worker
        # process) in the order they were opened, which pids and counters do not.
        seconds, nanos = divmod(time.time_ns(), 1_000_000_000)
        self.path = directory / f"events.out.tfevents.{seconds}.{host}.{nanos:09d}.{pid}.{file_id}{suffix}"
        self.pending: list[bytes] = []
        self.file: BinaryIO | None = None
        self.end = -1  # bytes of whole records in the file; -1: not created yet
        self.torn = False  # bytes past `end` may be part of a failed write: cut off before the next

    def open(self) -> None:
        """Create the file with its header record, or open it again to append."""
        if self.end < 0:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.file = open(self.path, "xb", buffering=0)  # noqa: SIM115 - closed in close()
            self.end = 0
            # Event{wall_time=1, file_version=3}: the record every TensorBoard reader expects first
            self.append(encode_record(_EVENT_HEAD.pack(0x09, time.time()) + b"\x1a" + _varint(13) + b"brain.Event:2"))
        else:
            self.file = open(self.path, "ab", buffering=0)  # noqa: SIM115 - closed in close()
            if self.torn:
                self._cut()

    def append(self, data: bytes) -> None:
        """Write whole records at the end, unbuffered; if this raises, none of them count."""
        assert self.file is not None
        if self.torn:
            self._cut()
        self.torn = True
        view = memoryview(data)
        while view:  # an unbuffered write may take only part of the bytes
            view = view[self.file.write(view) :]
        self.torn = False
        self.end += len(data)

    def undo(self, end: int) -> None:
        """Forget what was written after `end` (a batch that failed part way: the bus retries it whole)."""
        if end != self.end:
            self.end, self.torn = end, True
            if self.file is not None:
                self._cut()

    def close(self) -> None:
        file, self.file = self.file, None
        if file is not None:
            file.close()

    def _cut(self) -> None:
        assert self.file is not None
        self.file.truncate(self.end)
        self.file.seek(self.end)
        self.torn = False


class TensorBoardSink(Sink):
    """Writes every event type as TensorBoard data under `logdir`.

    The default origin writes into `logdir` itself (what SummaryWriter users expect: one run);
    any other origin writes into `logdir/<origin.label>`, so sites and ranks appear as runs side
    by side. Scalars and Metrics become scalar series (float32, as in every TensorBoard writer),
    Histogram a histogram (raw values binned into `histogram_bins` equal bins), Text a text
    summary, Hparams the HPARAMS tab entry plus its metrics as scalars, Image an image summary
    (PNG, encoded here: grayscale stays one channel), ChartLayout the CUSTOM SCALARS tab's
    layout (TensorBoard shows the latest of a run). Wall time and step are
    written as given. Runs in the shared sink host by default (`isolation = "host"`): encoding is
    pure Python and would otherwise take the training process's GIL.

    At most `max_open_runs` event files are open at once, whatever the number of origins: the
    least recently written one is closed to make room and opened again to append when its origin
    writes next. A batch is all or nothing: if a write fails, what the batch wrote is cut off
    again, so the bus's retry duplicates nothing.
    """

    isolation: ClassVar[Literal["none", "host", "process"]] = "host"

    def __init__(
        self,
        logdir: str | Path,
        *,
        filename_suffix: str = "",
        histogram_bins: int = 64,
        max_open_runs: int = MAX_OPEN_RUNS,
    ) -> None:
        self.logdir = Path(logdir)
        check_folder(self.logdir, self.name)  # a mistake fails here, not seconds later in a sink host
        self.filename_suffix = filename_suffix
        self.histogram_bins = histogram_bins
        self._runs: dict[Origin, _Run] = {}
        self._logdir_gone = False  # the logdir was deleted after open: see _deleted
        self._pending: dict[Origin, _Run] = {}  # runs with encoded records not yet written
        self._open: OpenSet[Origin, _Run] = OpenSet(max_open_runs, _Run.close)
        self._headers = _Headers()
        self._values = _ValuePrefixes()
        self._scalars = _ScalarPrefixes(self._values)

    @property
    def output_dir(self) -> Path | None:
        return self.logdir

    @property
    def name(self) -> str:
        return f"tensorboard:{self.logdir}"

    # The bus runs a sink on its own thread (or worker process): blocking file I/O is fine here.

    async def open(self) -> None:
        """Create `logdir` now, so an unwritable one fails the sink's open, not its first batch."""
        self.logdir.mkdir(parents=True, exist_ok=True)

    async def write_batch(self, events: Sequence[Event]) -> int | None:
        return self._write(events)

    async def flush(self) -> None:
        self._write_pending()

    async def close(self) -> None:
        self._close()

    def _write(self, events: Sequence[Event]) -> int | None:
        """Encode a batch, then write each run it touched. Returns the events refused."""
        ends: dict[_Run, int] = {}  # where each run's file ended before this batch
        try:
            rejected = self._encode(events)
            self._write_pending(ends)
        except BaseException:
            for run in self._pending.values():  # the bus retries the whole batch: keep no part of it
                run.pending.clear()
            self._pending.clear()
            for run, end in ends.items():
                run.undo(end)
            raise
        if rejected:
            log.warning("tensorboard: %d events with a step beyond int64 were not written", rejected)
        return rejected or None

    def _encode(self, events: Sequence[Event]) -> int:
        """Append each event's framed record(s) to its run's pending list; count refused events.

        One loop with local names: at ~1 µs per scalar, attribute and call overhead is the cost.
        """
        frame, scalars, values, head, f32 = self._headers.frame, self._scalars, self._values, _EVENT_HEAD.pack, _f32
        headers, crc, u32, pack_f32 = self._headers, crc32c.crc32c, _U32.pack, _F32.pack
        last_origin: object = None
        last_step = -1
        step_field = b""
        pending: list[bytes] = []
        rejected = 0
        for event in events:
            step = event.step
            if step > _MAX_STEP:
                rejected += 1
                continue
            origin = event.origin
            if origin is not last_origin and origin != last_origin:
                run = self._pending.get(origin)
                if run is None:
                    run = self._pending[origin] = self._run(origin)
                pending = run.pending
                last_origin = origin
            if step != last_step:  # consecutive events usually share a step; proto3 omits step 0
                step_field, last_step = b"\x10" + _varint(step) if step else b"", step
            kind = type(event)
            if kind is Scalar:  # the common record, framed inline (see _Headers.frame, _masked_crc)
                try:
                    value = pack_f32(event.value)  # type: ignore[union-attr]
                except OverflowError:
                    value = f32(event.value)  # type: ignore[union-attr]
                data = head(0x09, event.wall_time) + step_field + scalars[event.name] + value  # type: ignore[union-attr]
                c = crc(data)
                pending.append(headers[len(data)] + data + u32((((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF))
            elif kind is Metrics:
                summary = b"".join([values[k] + f32(v) for k, v in event.values.items()])  # type: ignore[union-attr]
                data = head(0x09, event.wall_time) + step_field + b"\x2a" + _varint(len(summary)) + summary
                pending.append(frame(data))
            else:
                pending.extend(encode_record(data) for data in self._rich(event))
        return rejected

    def _rich(self, event: Event) -> list[bytes]:
        """Serialized Events for the rare kinds, built with tensorboardX's protobufs."""
        from tensorboardX.proto.event_pb2 import Event as EventProto
        from tensorboardX.proto.summary_pb2 import Summary

        summaries: list[Any]
        match event:
            case Histogram(name=name):
                summaries = [Summary(value=[Summary.Value(tag=name, histo=self._histogram(event))])]
            case Text(name=name, text=text):
                from tensorboardX.summary import text as text_summary

                summaries = [text_summary(name, text)]
            case Hparams(params=params, metrics=metrics):
                from tensorboardX.summary import hparams

                # experiment, session start and session end: what the HPARAMS plugin reads
                summaries = list(hparams(params, metrics))
                if metrics:  # the plugin takes a session's metric values from scalar series
                    summaries.append(Summary(value=[Summary.Value(tag=k, simple_value=v) for k, v in metrics.items()]))
            case Image(name=name, pixels=pixels, height=height, width=width, channels=channels):
                png = encode_png(pixels, height, width, channels)
                image = Summary.Image(height=height, width=width, colorspace=channels, encoded_image_string=png)
                summaries = [Summary(value=[Summary.Value(tag=name, image=image)])]
            case ChartLayout(layout=layout):
                from tensorboardX.summary import custom_scalars

                # the tag custom_scalars__config__, the plugin's one record per run
                summaries = [custom_scalars(layout)]
            case Scalar() | Metrics():  # encoded by hand in _encode
                return []
            case RunConfig() | RunSummary():  # a W&B run's config and summary: no plugin shows them
                return []
            case Audio() | Video() | PrCurve() | Mesh():
                summaries = [media_summary(event)]
            case Tensor():
                summaries = [tensor_summary(event)]
            case Graph():
                return [e.SerializeToString() for e in graph_events(event)]
            case Embedding():  # files beside the run's event file, as tensorboardX writes them
                if not self._deleted():
                    write_projector(self._run(event.origin).path.parent, event)
                return []
        return [
            EventProto(wall_time=event.wall_time, step=event.step, summary=s).SerializeToString() for s in summaries
        ]

    def _histogram(self, event: Histogram) -> Any:
        """A HistogramProto from raw values (binned here, NaN/inf left out: TensorBoard has no
        bucket for them) or from precomputed buckets."""
        import numpy as np
        from tensorboardX.proto.summary_pb2 import HistogramProto

        if event.values is None:
            return _bucket_histogram(event.bucket_limits or (), event.bucket_counts or ())
        values = np.asarray(event.values, dtype=np.float64)
        values = values[np.isfinite(values)]
        if values.size == 0:
            return HistogramProto()
        with np.errstate(over="ignore", invalid="ignore"):  # sums beyond float64 are inf, as they should
            try:
                counts, edges = np.histogram(values, bins=self.histogram_bins)
            except ValueError:  # a range numpy cannot split into equal bins (tiny, or beyond float64)
                counts, edges = np.array([values.size]), np.array([values.min(), values.max()])
            return HistogramProto(
                min=float(values.min()),
                max=float(values.max()),
                num=float(values.size),
                sum=float(values.sum()),
                sum_squares=float(np.dot(values, values)),
                bucket_limit=edges[1:].tolist(),
                bucket=counts.tolist(),
            )

    def _run(self, origin: Origin) -> _Run:
        run = self._runs.get(origin)
        if run is None:
            # by origin: the default origin writes into the logdir itself (its label is "main")
            directory = self.logdir if origin == DEFAULT_ORIGIN else self.logdir / origin.label
            run = self._runs[origin] = _Run(directory, self.filename_suffix)
        return run

    def _write_pending(self, ends: dict[_Run, int] | None = None) -> None:
        """One write per run for everything encoded since the last call; `ends` gets where each
        run's file ended before it."""
        while self._pending:
            origin, run = next(iter(self._pending.items()))
            if self._open.get(origin) is None:
                if self._deleted():
                    run.pending.clear()
                    del self._pending[origin]
                    continue
                self._open.make_room()
                run.open()
                self._open.add(origin, run)
            if ends is not None:
                ends.setdefault(run, run.end)
            run.append(b"".join(run.pending))
            run.pending.clear()
            del self._pending[origin]

    def _deleted(self) -> bool:
        """True once `logdir`, made at open, is gone (a test's tearDown removed it while the
        writer was still open). torch's SummaryWriter writes on into its open file, deleted with
        the folder, and never makes the folder again; so does this sink: the files it has open
        take the records, and what would need a file in the deleted folder is not written (a
        warning says so once), rather than filling a folder the user removed."""
        if self._logdir_gone:
            return True
        if self.logdir.is_dir():
            return False
        self._logdir_gone = True
        log.warning(
            "tensorboard: %s was deleted while the sink was open; what is logged to it from now on is not written",
            self.logdir,
        )
        return True

    def _close(self) -> None:
        self._write_pending()
        self._open.close_all()
        for run in self._runs.values():
            if run.torn and not self._deleted():  # a failed write that was never retried: cut it off
                run.open()
                run.close()
        self._runs.clear()


def _bucket_histogram(limits: Sequence[float], counts: Sequence[float]) -> Any:
    """A HistogramProto from right bucket edges and counts.

    TensorBoard draws the occupied buckets from `min` (left edge of the first) to `max` (right
    edge of the last). The first bucket has no left edge of its own, so it gets the width of its
    neighbour, which is exact for equal-width bins such as numpy's `histogram(...)[1][1:]`.
    """
    from tensorboardX.proto.summary_pb2 import HistogramProto

    occupied = [i for i, c in enumerate(counts) if c]
    if not occupied:
        return HistogramProto(bucket_limit=limits, bucket=counts)
    first, last = occupied[0], occupied[-1]
    if first > 0:
        low = limits[first - 1]
    elif len(limits) > 1:
        low = 2 * limits[0] - limits[1]
    else:
        low = limits[0]
    return HistogramProto(min=low, max=limits[last], num=float(sum(counts)), bucket_limit=limits, bucket=counts)
