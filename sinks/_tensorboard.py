"""TensorBoardSink: TensorBoard event files written in batches, one run per origin.

Scalars are the hot path, so their Event protobuf (wall_time, step, one Summary value) is encoded
by hand: a handful of bytes around a cached tag, framed as a TFRecord with crc32c. Histograms,
text and hparams are rare and use tensorboardX's protobuf classes and summary helpers. Files are
written with one write per run per batch and flushed at the end of the batch, so a live
TensorBoard shows new points within the bus's `max_interval`.
"""

from __future__ import annotations

import math
import os
import socket
import struct
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO, ClassVar, Literal

import anyio
import crc32c

from bus import Event, Histogram, Hparams, Metrics, Scalar, Sink, Text

__all__ = ["TensorBoardSink", "encode_record"]

_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
_F64 = struct.Struct("<d")
_F32 = struct.Struct("<f")
_FLOAT32_MAX = 3.4028234663852886e38


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


def _as_float32(value: float) -> float:
    """TensorBoard stores scalars as float32; finite values beyond its range become ±inf."""
    if math.isfinite(value) and abs(value) > _FLOAT32_MAX:
        return math.copysign(math.inf, value)
    return value


class _TagCache(dict[str, bytes]):
    """Summary.Value prefix per tag (field 1, the tag; then field 2's key): tags repeat forever."""

    def __missing__(self, tag: str) -> bytes:
        raw = tag.encode("utf-8")
        prefix = b"\x0a" + _varint(len(raw)) + raw + b"\x15"
        self[tag] = prefix
        return prefix


def _scalar_event(wall_time: float, step: int, values: bytes) -> bytes:
    """Event{wall_time=1, step=2, summary=5{value=1...}} around already encoded Summary.Values."""
    return b"\x09" + _F64.pack(wall_time) + b"\x10" + _varint(step) + b"\x2a" + _varint(len(values)) + values


def _summary_values(pairs: Any, tags: _TagCache) -> bytes:
    parts = []
    for name, value in pairs:
        body = tags[name] + _F32.pack(_as_float32(value))
        parts.append(b"\x0a" + _varint(len(body)) + body)
    return b"".join(parts)


class _Run:
    """One event file: the run of one origin."""

    def __init__(self, directory: Path, suffix: str, counter: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}.{counter}{suffix}"
        self.path = directory / name
        self.file: BinaryIO = open(self.path, "ab")  # noqa: SIM115 - closed in close()
        self.pending: list[bytes] = []
        # Event{wall_time=1, file_version=3: "brain.Event:2"}: what every TensorBoard file starts with
        version = b"brain.Event:2"
        first = b"\x09" + _F64.pack(time.time()) + b"\x1a" + _varint(len(version)) + version
        self.file.write(encode_record(first))
        self.file.flush()

    def write_pending(self) -> None:
        if self.pending:
            self.file.write(b"".join(self.pending))
            self.pending.clear()
        self.file.flush()


class TensorBoardSink(Sink):
    """Writes every event type as TensorBoard data under `logdir`.

    The default origin writes into `logdir` itself (what SummaryWriter users expect: one run);
    any other origin writes into `logdir/<origin.label>`, so sites and ranks appear as runs side
    by side. Scalars and Metrics become scalar series (float32, as in every TensorBoard writer),
    Histogram a histogram, Text a text summary, Hparams the HPARAMS tab entry (plus its metrics
    as scalars). Runs in a worker process by default (`isolation = "process"`): encoding is pure
    Python and would otherwise take the training process's GIL.
    """

    isolation: ClassVar[Literal["none", "process"]] = "process"

    def __init__(self, logdir: str | Path, *, filename_suffix: str = "", histogram_bins: int = 64) -> None:
        self.logdir = Path(logdir)
        self.filename_suffix = filename_suffix
        self.histogram_bins = histogram_bins
        self._runs: dict[str, _Run] = {}
        self._tags = _TagCache()

    @property
    def name(self) -> str:
        return f"tensorboard:{self.logdir}"

    async def write_batch(self, events: Sequence[Event]) -> None:
        await anyio.to_thread.run_sync(self._write, events)

    async def flush(self) -> None:
        await anyio.to_thread.run_sync(self._flush_all)

    async def close(self) -> None:
        await anyio.to_thread.run_sync(self._close_all)

    def _write(self, events: Sequence[Event]) -> None:
        tags = self._tags
        touched: set[_Run] = set()
        for event in events:
            run = self._run(event.origin.label)
            touched.add(run)
            kind = type(event)
            if kind is Scalar:
                values = _summary_values(((event.name, event.value),), tags)  # type: ignore[union-attr]
                run.pending.append(encode_record(_scalar_event(event.wall_time, event.step, values)))
            elif kind is Metrics:
                values = _summary_values(event.values.items(), tags)  # type: ignore[union-attr]
                run.pending.append(encode_record(_scalar_event(event.wall_time, event.step, values)))
            else:
                run.pending.extend(encode_record(e) for e in self._rich(event))
        for run in touched:
            run.write_pending()

    def _rich(self, event: Event) -> list[bytes]:
        """Serialized Events for the rare kinds, built with tensorboardX's protobufs."""
        from tensorboardX.proto.event_pb2 import Event as EventProto
        from tensorboardX.proto.summary_pb2 import Summary

        summaries: list[Summary]
        if isinstance(event, Histogram):
            summaries = [Summary(value=[Summary.Value(tag=event.name, histo=self._histogram(event))])]
        elif isinstance(event, Text):
            from tensorboardX.summary import text

            summaries = [text(event.name, event.text)]
        elif isinstance(event, Hparams):
            from tensorboardX.summary import hparams

            summaries = list(hparams(event.params, event.metrics))
            if event.metrics:
                values = [Summary.Value(tag=k, simple_value=_as_float32(v)) for k, v in event.metrics.items()]
                summaries.append(Summary(value=values))
        else:
            return []
        return [
            EventProto(wall_time=event.wall_time, step=event.step, summary=s).SerializeToString() for s in summaries
        ]

    def _histogram(self, event: Histogram) -> Any:
        import numpy as np
        from tensorboardX.proto.summary_pb2 import HistogramProto

        if event.values is not None:
            values = np.asarray(event.values, dtype=np.float64)
            values = values[np.isfinite(values)]  # TensorBoard histograms have no NaN/inf buckets
            if values.size == 0:
                return HistogramProto()
            counts, edges = np.histogram(values, bins=self.histogram_bins)
            return HistogramProto(
                min=float(values.min()),
                max=float(values.max()),
                num=float(values.size),
                sum=float(values.sum()),
                sum_squares=float(np.dot(values, values)),
                bucket_limit=edges[1:].tolist(),
                bucket=counts.tolist(),
            )
        limits = list(event.bucket_limits or ())
        bins = list(event.bucket_counts or ())
        occupied = [i for i, c in enumerate(bins) if c]
        low = limits[occupied[0] - 1] if occupied and occupied[0] > 0 else (limits[0] if limits else 0.0)
        return HistogramProto(
            min=low,
            max=limits[occupied[-1]] if occupied else 0.0,
            num=float(sum(bins)),
            bucket_limit=limits,
            bucket=bins,
        )

    def _run(self, label: str) -> _Run:
        run = self._runs.get(label)
        if run is None:
            directory = self.logdir if label == "main" else self.logdir / label
            run = self._runs[label] = _Run(directory, self.filename_suffix, len(self._runs))
        return run

    def _flush_all(self) -> None:
        for run in self._runs.values():
            run.write_pending()

    def _close_all(self) -> None:
        for run in self._runs.values():
            run.write_pending()
            run.file.close()
        self._runs.clear()

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_runs": {}, "_tags": _TagCache()}
