"""Calling-thread cost of the SummaryWriter drop-in next to tensorboardX's, and of skipped calls.

What a training loop pays per call, measured on the calling thread as the median of 5 runs of N
calls in a tight loop: `producers.SummaryWriter.add_scalar` / `add_scalars` (default
TensorBoardSink, in its worker process) against `tensorboardX.SummaryWriter`'s, and a call that
`log_freq` skips (bare `LogFrequency`, `MetricLogger.scalar`, `SummaryWriter.add_scalar`).
An empty loop iteration is listed too: every per-call number includes it.
Each contender runs in its own interpreter (`run_contenders`).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import run_contenders, serve_contender, write_result

SERIES = {"train": 0.5, "val": 0.4, "test": 0.3}
NEVER = 1_000_000_000  # log_freq for "skip everything": steps 1.. are never a multiple of it


def _median_per_call(loop: Callable[[int, int], None], calls: int) -> float:
    """Median seconds per call of `loop(first_step, calls)` over 5 runs (steps never repeat)."""
    times = []
    for run in range(5):
        start = time.perf_counter()
        loop(1 + run * calls, calls)
        times.append((time.perf_counter() - start) / calls)
    return statistics.median(times)


def _empty(tmp: Path) -> float:
    def loop(first: int, n: int) -> None:
        for _step in range(first, first + n):
            pass

    return _median_per_call(loop, 1_000_000)


def _ours_scalar(tmp: Path) -> float:
    from producers import SummaryWriter

    with SummaryWriter(tmp) as writer:
        writer.flush()  # the sink's worker process is up before the clock starts
        add = writer.add_scalar

        def loop(first: int, n: int) -> None:
            for step in range(first, first + n):
                add("train/loss", 0.5, step)

        return _median_per_call(loop, 20_000)


def _tbx_scalar(tmp: Path) -> float:
    from tensorboardX import SummaryWriter

    writer = SummaryWriter(str(tmp))
    add = writer.add_scalar

    def loop(first: int, n: int) -> None:
        for step in range(first, first + n):
            add("train/loss", 0.5, step)

    try:
        return _median_per_call(loop, 5_000)
    finally:
        writer.close()


def _ours_scalars(tmp: Path) -> float:
    from producers import SummaryWriter

    with SummaryWriter(tmp) as writer:
        writer.flush()
        add = writer.add_scalars

        def loop(first: int, n: int) -> None:
            for step in range(first, first + n):
                add("accuracy", SERIES, step)

        return _median_per_call(loop, 5_000)


def _tbx_scalars(tmp: Path) -> float:
    from tensorboardX import SummaryWriter

    writer = SummaryWriter(str(tmp))
    add = writer.add_scalars

    def loop(first: int, n: int) -> None:
        for step in range(first, first + n):
            add("accuracy", SERIES, step)

    try:
        return _median_per_call(loop, 2_000)
    finally:
        writer.close()


def _skipped_frequency(tmp: Path) -> float:
    from producers import LogFrequency

    should_log = LogFrequency.parse(NEVER).should_log

    def loop(first: int, n: int) -> None:
        for step in range(first, first + n):
            should_log(step)

    return _median_per_call(loop, 1_000_000)


def _skipped_logger(tmp: Path) -> float:
    from benchmarks.bench_bus import NullSink
    from producers import MetricLogger

    with MetricLogger(sinks=[NullSink()], log_freq=NEVER) as log:
        scalar = log.scalar

        def loop(first: int, n: int) -> None:
            for step in range(first, first + n):
                scalar("train/loss", 0.5, step)

        return _median_per_call(loop, 500_000)


def _skipped_writer(tmp: Path) -> float:
    from producers import SummaryWriter

    with SummaryWriter(tmp, log_freq=NEVER) as writer:
        add = writer.add_scalar

        def loop(first: int, n: int) -> None:
            for step in range(first, first + n):
                add("train/loss", 0.5, step)

        return _median_per_call(loop, 500_000)


CONTENDERS: dict[str, tuple[str, str, Callable[[Path], float]]] = {
    # name: (what, unit, measure); unit "us" or "ns" per call
    "ours_scalar": ("producers.SummaryWriter.add_scalar (TensorBoard sink in its worker)", "us", _ours_scalar),
    "tbx_scalar": ("tensorboardX.SummaryWriter.add_scalar", "us", _tbx_scalar),
    "ours_scalars": ("producers.SummaryWriter.add_scalars, 3 series", "us", _ours_scalars),
    "tbx_scalars": ("tensorboardX.SummaryWriter.add_scalars, 3 series", "us", _tbx_scalars),
    "skipped_frequency": ("skipped: LogFrequency.should_log(step) alone", "ns", _skipped_frequency),
    "skipped_logger": ("skipped: MetricLogger.scalar with log_freq", "ns", _skipped_logger),
    "skipped_writer": ("skipped: SummaryWriter.add_scalar with log_freq", "ns", _skipped_writer),
    "empty": ("an empty loop iteration (included in every row)", "ns", _empty),
}


def contender(name: str) -> float:
    with tempfile.TemporaryDirectory() as d:
        return CONTENDERS[name][2](Path(d))


def main() -> None:
    if serve_contender(contender):
        return
    seconds = run_contenders(__file__, list(CONTENDERS))
    baseline = {"ours_scalar": "tbx_scalar", "ours_scalars": "tbx_scalars"}
    rows = []
    for name, (what, unit, _) in CONTENDERS.items():
        row = {"what": what, "value": seconds[name] * (1e6 if unit == "us" else 1e9), "unit": f"{unit}/call"}
        if name in baseline:
            row["x_faster_than_tensorboardX"] = seconds[baseline[name]] / seconds[name]
        rows.append(row)
    write_result("producers", rows)


if __name__ == "__main__":
    main()
