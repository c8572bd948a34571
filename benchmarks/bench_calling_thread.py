"""Cost on the training thread per scalar: MetricLogger next to the direct alternatives.

What the training loop pays per logged value, measured on the calling thread (median of 5 runs
of N calls in a tight loop). With the sinks in-process, the bus thread's work (formatting CSV and
JSON) competes for the GIL and shows up in the caller's time; with the sinks in worker processes
only the hand-off remains. The direct baselines: a csv.writer row,
tensorboardX `SummaryWriter.add_scalar`, and `wandb.log` (offline, 10 values per call).
Each contender runs in its own interpreter.
"""

from __future__ import annotations

import csv
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import run_contenders, serve_contender, write_result

CALLS = 20_000
VALUES = {f"metric_{k}": 0.1 * k for k in range(10)}


def _per_call(call: Callable[[int], None], calls: int = CALLS) -> float:
    """Median seconds per call over 5 runs of `calls` calls."""
    times = []
    step = 0
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(calls):
            call(step)
            step += 1
        times.append((time.perf_counter() - start) / calls)
    return statistics.median(times)


def _metricbus(tmp: Path, per_call: int, isolate: str = "none") -> float:
    from producers import MetricLogger
    from sinks import CsvSink, JsonlSink

    with MetricLogger() as log:
        log.add_sink(CsvSink(tmp / "m.csv"), isolate=isolate)
        log.add_sink(JsonlSink(tmp / "m.jsonl"), isolate=isolate)
        log.flush()  # workers started before the clock
        if per_call == 1:
            return _per_call(lambda step: log.scalar("train/loss", 0.5, step))
        return _per_call(lambda step: log.scalars(VALUES, step)) / per_call


def _metricbus_null() -> float:
    """The call's own cost: the bus thread drains into a sink that does nothing."""
    from benchmarks.bench_bus import NullSink
    from producers import MetricLogger

    with MetricLogger(sinks=[NullSink()]) as log:
        return _per_call(lambda step: log.scalar("train/loss", 0.5, step))


def _summary_writer(tmp: Path) -> float:
    """producers.SummaryWriter.add_scalar: the drop-in's call, TensorBoard sink in its worker."""
    from producers import SummaryWriter

    with SummaryWriter(tmp) as writer:
        writer.flush()  # worker started before the clock
        return _per_call(lambda step: writer.add_scalar("train/loss", 0.5, step))


def _skipped(tmp: Path) -> float:
    """A call that log_freq skips: what logging 'every 100 steps' costs on the other 99."""
    from benchmarks.bench_bus import NullSink
    from producers import MetricLogger

    with MetricLogger(sinks=[NullSink()], log_freq=1_000_000_000) as log:
        return _per_call(lambda step: log.scalar("train/loss", 0.5, step + 1))


def _csv_direct(tmp: Path) -> float:
    with open(tmp / "m.csv", "w", newline="") as f:
        writer = csv.writer(f)
        return _per_call(lambda step: writer.writerow((time.time(), step, "train/loss", 0.5)))


def _tensorboardx(tmp: Path) -> float:
    from tensorboardX import SummaryWriter

    writer = SummaryWriter(str(tmp))
    try:
        return _per_call(lambda step: writer.add_scalar("train/loss", 0.5, step), calls=5_000)
    finally:
        writer.close()


def _wandb(tmp: Path) -> float:
    os.environ.update(WANDB_MODE="offline", WANDB_SILENT="true", WANDB_DIR=str(tmp))
    import wandb

    run = wandb.init(project="bench", dir=str(tmp))
    try:
        return _per_call(lambda step: run.log(VALUES, step=step), calls=1_000) / len(VALUES)
    finally:
        run.finish()


def contender(name: str) -> float:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        return {
            "metricbus_null": _metricbus_null,
            "summary_writer": lambda: _summary_writer(tmp),
            "skipped": lambda: _skipped(tmp),
            "metricbus_scalar": lambda: _metricbus(tmp, 1, "process"),
            "metricbus_scalars10": lambda: _metricbus(tmp, len(VALUES), "process"),
            "metricbus_scalar_inproc": lambda: _metricbus(tmp, 1),
            "metricbus_scalars10_inproc": lambda: _metricbus(tmp, len(VALUES)),
            "csv_direct": lambda: _csv_direct(tmp),
            "tensorboardx": lambda: _tensorboardx(tmp),
            "wandb": lambda: _wandb(tmp),
        }[name]()


def main() -> None:
    if serve_contender(contender):
        return
    names = [
        "metricbus_null",
        "metricbus_scalar",
        "metricbus_scalars10",
        "metricbus_scalar_inproc",
        "metricbus_scalars10_inproc",
        "summary_writer",
        "skipped",
        "csv_direct",
        "tensorboardx",
        "wandb",
    ]
    r = run_contenders(__file__, names)
    ours = r["metricbus_scalars10"]
    labels = {
        "metricbus_null": "MetricLogger.scalar (null sink: the call itself)",
        "summary_writer": "producers.SummaryWriter.add_scalar (TensorBoard sink)",
        "skipped": "MetricLogger.scalar skipped by log_freq",
        "metricbus_scalar": "MetricLogger.scalar (CSV+JSONL sinks in workers)",
        "metricbus_scalars10": "MetricLogger.scalars, 10 per call (sinks in workers)",
        "metricbus_scalar_inproc": "MetricLogger.scalar (CSV+JSONL sinks in-process)",
        "metricbus_scalars10_inproc": "MetricLogger.scalars, 10 per call (sinks in-process)",
        "csv_direct": "csv.writer.writerow (direct, file)",
        "tensorboardx": "tensorboardX SummaryWriter.add_scalar",
        "wandb": "wandb.log offline, 10 values per call",
    }
    rows = [
        {"what": labels[k], "value": v * 1e6, "unit": "us/scalar", "x_metricbus_scalars": v / ours}
        for k, v in r.items()
    ]
    write_result("calling_thread", rows)


if __name__ == "__main__":
    main()
