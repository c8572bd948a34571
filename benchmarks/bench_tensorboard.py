"""End to end into TensorBoard event files: scalars/s through metricbus next to tensorboardX.

tensorboardX: `SummaryWriter.add_scalar` N times, then `close()`. metricbus: `publish_many` of
pre-built Scalar events into a TensorBoardSink, then leaving the bus (drained, flushed, closed):
in-process, and in its default worker process (started before the clock, as tensorboardX is
imported before it). Also Metrics of 10 keys (one Summary of 10 values per event), and the
sink's own cost per scalar: encoding and framing alone, and with the file write. Each contender
runs in its own interpreter; each number is the median of 5 runs.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import anyio

from benchmarks._common import run_contenders, serve_contender, write_result
from bus import Event, MetricBus, Metrics, Scalar

N = 200_000
TAGS = 10
REPEATS = 5


def _scalars(n: int = N) -> list[Event]:
    return [Scalar(f"train/metric_{i % TAGS}", 1.0 / (i + 1), step=i // TAGS) for i in range(n)]


def _metrics(n: int = N) -> list[Event]:
    return [Metrics({f"train/metric_{k}": 1.0 / (s + k + 1) for k in range(TAGS)}, step=s) for s in range(n // TAGS)]


def _tensorboardx(tmp: Path) -> float:
    """scalars/s of SummaryWriter.add_scalar, construction to close."""
    from tensorboardX import SummaryWriter

    n = N // 10  # a tenth of the events keeps this slow contender's run short
    start = time.perf_counter()
    writer = SummaryWriter(str(tmp))
    for i in range(n):
        writer.add_scalar(f"train/metric_{i % TAGS}", 1.0 / (i + 1), i // TAGS)
    writer.close()
    return n / (time.perf_counter() - start)


async def _metricbus(tmp: Path, isolate: str, events: list[Event]) -> float:
    """scalars/s from the first publish to the bus's exit (every event written and closed)."""
    from sinks import TensorBoardSink

    scalars = sum(len(e.values) if isinstance(e, Metrics) else 1 for e in events)
    async with MetricBus() as bus:
        bus.add_sink(TensorBoardSink(tmp), isolate=isolate, capacity=50_000, max_batch=10_000)  # type: ignore[arg-type]
        await bus.publish(Scalar("warm-up", 0.0, step=0))
        await bus.flush()  # the worker is running and the sink's modules imported before the clock
        start = time.perf_counter()
        for i in range(0, len(events), 10_000):
            await bus.publish_many(events[i : i + 10_000])
    return scalars / (time.perf_counter() - start)


def _sink_us(tmp: Path, write: bool) -> float:
    """µs per scalar of the sink's worker-thread code, without the bus: encode (+ write)."""
    from sinks import TensorBoardSink

    sink = TensorBoardSink(tmp)
    sink._encode(_scalars(1))  # the run's file exists before the clock
    sink._write_pending()
    events = _scalars()
    start = time.perf_counter()
    if write:
        sink._write(events)
    else:
        sink._encode(events)
    elapsed = time.perf_counter() - start
    sink._close()
    return elapsed / N * 1e6


CONTENDERS: dict[str, Callable[[Path], float]] = {
    "tensorboardx": _tensorboardx,
    "metricbus_none": lambda tmp: anyio.run(_metricbus, tmp, "none", _scalars()),
    "metricbus_process": lambda tmp: anyio.run(_metricbus, tmp, "process", _scalars()),
    "metricbus_metrics": lambda tmp: anyio.run(_metricbus, tmp, "none", _metrics()),
    "encode_us": lambda tmp: _sink_us(tmp, write=False),
    "encode_write_us": lambda tmp: _sink_us(tmp, write=True),
}


def contender(name: str) -> float:
    """The median of REPEATS runs of one contender, each into a fresh directory."""
    results = []
    for _ in range(REPEATS):
        with tempfile.TemporaryDirectory() as d:
            results.append(CONTENDERS[name](Path(d)))
    return statistics.median(results)


def main() -> None:
    if serve_contender(contender):
        return
    r = run_contenders(__file__, list(CONTENDERS))
    base = r["tensorboardx"]

    def versus(what: str, name: str) -> dict[str, object]:
        return {"what": what, "value": r[name], "unit": "scalars/s", "x_tensorboardx": r[name] / base}

    write_result(
        "tensorboard",
        [
            {"what": "tensorboardX SummaryWriter.add_scalar, end to end", "value": base, "unit": "scalars/s"},
            versus("MetricBus -> TensorBoardSink in-process, end to end", "metricbus_none"),
            versus("MetricBus -> TensorBoardSink in a worker, end to end", "metricbus_process"),
            versus("MetricBus -> TensorBoardSink, Metrics of 10 keys, in-process", "metricbus_metrics"),
            {"what": "TensorBoardSink encode + frame, per scalar", "value": r["encode_us"], "unit": "us"},
            {"what": "TensorBoardSink encode + frame + write, per scalar", "value": r["encode_write_us"], "unit": "us"},
        ],
    )


if __name__ == "__main__":
    main()
