"""End to end into TensorBoard event files: scalars/s through metricbus next to tensorboardX.

tensorboardX: `SummaryWriter.add_scalar` N times, then `close()`. metricbus: `publish_many` of
pre-built Scalar events into a TensorBoardSink (in-process, and in its default worker process,
started before the clock), then leaving the bus (drained, closed). Also: the sink's encoding
cost per scalar. Each contender runs in its own interpreter; the best of 3 runs is kept.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import anyio

from benchmarks._common import run_contenders, serve_contender, write_result
from bus import Event, MetricBus, Scalar

N = 200_000


def _events(n: int = N) -> list[Event]:
    return [Scalar(f"train/metric_{i % 10}", 1.0 / (i + 1), step=i // 10) for i in range(n)]


def _tensorboardx(tmp: Path) -> float:
    from tensorboardX import SummaryWriter

    n = N // 10  # ~7k/s: a tenth of the events keeps this run short
    start = time.perf_counter()
    writer = SummaryWriter(str(tmp))
    for i in range(n):
        writer.add_scalar(f"train/metric_{i % 10}", 1.0 / (i + 1), i // 10)
    writer.close()
    return n / (time.perf_counter() - start)


async def _metricbus(tmp: Path, isolate: str) -> float:
    from sinks import TensorBoardSink

    events = _events()
    async with MetricBus() as bus:
        bus.add_sink(TensorBoardSink(tmp), isolate=isolate, capacity=50_000, max_batch=10_000)  # type: ignore[arg-type]
        await bus.publish(Scalar("warm-up", 0.0, step=0))
        await bus.flush()  # the worker is started, as tensorboardX is imported, before the clock
        start = time.perf_counter()
        for i in range(0, N, 10_000):
            await bus.publish_many(events[i : i + 10_000])
    return N / (time.perf_counter() - start)


def _encode_us(tmp: Path) -> float:
    from sinks import TensorBoardSink

    sink = TensorBoardSink(tmp)
    events = _events()
    start = time.perf_counter()
    sink._write(events)
    elapsed = time.perf_counter() - start
    sink._close_all()
    return elapsed / N * 1e6


def contender(name: str) -> float:
    best = []
    for _ in range(3):
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d)
            if name == "tensorboardx":
                best.append(_tensorboardx(tmp))
            elif name == "encode":
                best.append(-_encode_us(tmp))
            else:
                best.append(anyio.run(_metricbus, tmp, name.removeprefix("metricbus_")))
    return abs(max(best))


def main() -> None:
    if serve_contender(contender):
        return
    r = run_contenders(__file__, ["tensorboardx", "metricbus_none", "metricbus_process", "encode"])
    base = r["tensorboardx"]
    rows = [
        {"what": "tensorboardX SummaryWriter.add_scalar, end to end", "value": base, "unit": "scalars/s"},
        {"what": "MetricBus -> TensorBoardSink in-process, end to end", "value": r["metricbus_none"],
         "unit": "scalars/s", "x_tensorboardx": r["metricbus_none"] / base},
        {"what": "MetricBus -> TensorBoardSink in a worker, end to end", "value": r["metricbus_process"],
         "unit": "scalars/s", "x_tensorboardx": r["metricbus_process"] / base},
        {"what": "TensorBoardSink encode + frame + write, per scalar", "value": r["encode"], "unit": "us"},
    ]  # fmt: skip
    write_result("tensorboard", rows)


if __name__ == "__main__":
    main()
