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
    Scalar,
    Sink,
    Text,
    Video,
)

from ._png import encode_png
from ._tb_media import graph_events, media_summary, write_projector

__all__ = ["TensorBoardSink"]

log = logging.getLogger("metricbus")

_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
_F32 = struct.Struct("<f")
_EVENT_HEAD = struct.Struct("<Bd")  # Event field 1 (wall_time, a double): key byte 0x09, value
_MAX_STEP = 2**63 - 1  # Event.step is an int64: beyond it a varint would wrap to another step
_CACHED_HEADER_MAX = 4096  # record lengths worth caching; bigger ones are rare (text, histograms)
_file_ids = itertools.count()  # one per file in this process: two sinks never share a file name


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
    """One event file: the run of one origin."""

    def __init__(self, directory: Path, suffix: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        host, pid, file_id = socket.gethostname(), os.getpid(), next(_file_ids)
        # TensorBoard reads a run's files in name order: after the second, the zero-padded
        # nanosecond keeps two files of one second (a framework's next stage, another worker
        # process) in the order they were opened, which pids and counters do not.
        seconds, nanos = divmod(time.time_ns(), 1_000_000_000)
        self.path = directory / f"events.out.tfevents.{seconds}.{host}.{nanos:09d}.{pid}.{file_id}{suffix}"
        self.file: BinaryIO = open(self.path, "xb")  # noqa: SIM115 - closed in TensorBoardSink.close
        self.pending: list[bytes] = []
        # Event{wall_time=1, file_version=3}: the record every TensorBoard reader expects first
        version = b"brain.Event:2"
        self.file.write(encode_record(_EVENT_HEAD.pack(0x09, time.time()) + b"\x1a" + _varint(13) + version))
        self.file.flush()

    def write_pending(self) -> None:
        """One write for everything encoded since the last call, then into the OS."""
        if self.pending:
            self.file.write(b"".join(self.pending))
            self.pending.clear()
            self.file.flush()


class TensorBoardSink(Sink):
    """Writes every event type as TensorBoard data under `logdir`.

    The default origin writes into `logdir` itself (what SummaryWriter users expect: one run);
    any other origin writes into `logdir/<origin.label>`, so sites and ranks appear as runs side
    by side. Scalars and Metrics become scalar series (float32, as in every TensorBoard writer),
    Histogram a histogram (raw values binned into `histogram_bins` equal bins), Text a text
    summary, Hparams the HPARAMS tab entry plus its metrics as scalars, Image an image summary
    (PNG, encoded here: grayscale stays one channel), ChartLayout the CUSTOM SCALARS tab's
    layout (TensorBoard shows the latest of a run). Wall time and step are
    written as given. Runs in a worker process by default (`isolation = "process"`): encoding is
    pure Python and would otherwise take the training process's GIL.
    """

    isolation: ClassVar[Literal["none", "process"]] = "process"

    def __init__(self, logdir: str | Path, *, filename_suffix: str = "", histogram_bins: int = 64) -> None:
        self.logdir = Path(logdir)
        self.filename_suffix = filename_suffix
        self.histogram_bins = histogram_bins
        self._runs: dict[Origin, _Run] = {}
        self._headers = _Headers()
        self._values = _ValuePrefixes()
        self._scalars = _ScalarPrefixes(self._values)

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
        """Encode a batch, then write and flush each run it touched. Returns the events refused."""
        try:
            rejected = self._encode(events)
        except BaseException:
            for run in self._runs.values():  # the bus retries the whole batch: keep no part of it
                run.pending.clear()
            raise
        self._write_pending()
        if rejected:
            log.warning("tensorboard: %d events with a step beyond int64 were not written", rejected)
        return rejected or None

    def _encode(self, events: Sequence[Event]) -> int:
        """Append each event's framed record(s) to its run's pending list; count refused events.

        One loop with local names: at ~1 µs per scalar, attribute and call overhead is the cost.
        """
        frame, scalars, values, head, f32 = self._headers.frame, self._scalars, self._values, _EVENT_HEAD.pack, _f32
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
                pending = self._run(origin).pending
                last_origin = origin
            if step != last_step:  # consecutive events usually share a step; proto3 omits step 0
                step_field, last_step = b"\x10" + _varint(step) if step else b"", step
            kind = type(event)
            if kind is Scalar:
                pending.append(frame(head(0x09, event.wall_time) + step_field + scalars[event.name] + f32(event.value)))  # type: ignore[union-attr]
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
            case Audio() | Video() | PrCurve() | Mesh():
                summaries = [media_summary(event)]
            case Graph():
                return [e.SerializeToString() for e in graph_events(event)]
            case Embedding():  # files beside the run's event file, as tensorboardX writes them
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
            # by origin, not label: Origin(site="main") is labelled "main" too but is not the default
            directory = self.logdir if origin == DEFAULT_ORIGIN else self.logdir / origin.label
            run = self._runs[origin] = _Run(directory, self.filename_suffix)
        return run

    def _write_pending(self) -> None:
        for run in self._runs.values():
            run.write_pending()

    def _close(self) -> None:
        for run in self._runs.values():
            run.write_pending()
            run.file.close()
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
