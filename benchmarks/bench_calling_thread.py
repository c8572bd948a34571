"""Cost on the training thread per logged value, against the API floor, and the end-to-end pace.

The floor is the cheapest call an API can offer: a Python method that appends a tuple to a deque
that another thread drains (for `scalars`, the same call given a dict of 10 values it builds).
Each contender logs 400,000 calls in a tight loop (long enough that the logger's own threads and
its sink host work inside the span), in its own interpreter, and reports wall time and the
calling thread's CPU time (`time.thread_time`) per call; the rounds alternate contenders and
the medians are kept. A tight loop logs ~10x faster than any sink writes, so for the per-call
rows the logger may hold the whole burst (`pending_limit=2,000,000`): they measure the call, not
the sinks' pace (which the end-to-end rows measure). "End to end" logs 1,000,000 values and
times until `flush()` returns: every value written by every sink. Sinks: CSV alone, then CSV + JSONL + TensorBoard + W&B
(offline), all with their defaults. The direct baselines (csv.writer, tensorboardX, wandb.log)
are what a loop pays without metricbus.
"""

from __future__ import annotations

import csv
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import run_contenders, serve_contender, write_result

CALLS = 400_000
ROUNDS = 3
VALUES = {f"metric_{k}": 0.1 * k for k in range(10)}


def _timed(call: Callable[[int], None], calls: int) -> dict[str, float]:
    wall0, cpu0 = time.perf_counter(), time.thread_time()
    for step in range(calls):
        call(step)
    return {"wall": (time.perf_counter() - wall0) / calls, "cpu": (time.thread_time() - cpu0) / calls}


class _Floor:
    """The API floor: append a tuple to a deque that another thread drains."""

    def __init__(self) -> None:
        self.queue: deque[Any] = deque()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def scalar(self, name: str, value: float, step: int) -> None:
        self.queue.append((name, value, step))

    def _drain(self) -> None:
        while not self._stop.wait(0.01):
            while self.queue:
                self.queue.popleft()

    def close(self) -> None:
        self._stop.set()


def _floor(per_call: int) -> dict[str, float]:
    floor = _Floor()
    try:
        if per_call == 1:
            return _timed(lambda step: floor.scalar("train/loss", 0.5, step), CALLS)
        return _timed(lambda step: floor.scalar({f"metric_{k}": 0.1 * k for k in range(10)}, 0.5, step), CALLS // 4)  # type: ignore[arg-type]
    finally:
        floor.close()


def _sinks(tmp: Path, which: str) -> list[Any]:
    from sinks import CsvSink, JsonlSink, TensorBoardSink, WandbSink

    if which == "csv":
        return [CsvSink(tmp / "m.csv")]
    return [
        CsvSink(tmp / "m.csv"),
        JsonlSink(tmp / "m.jsonl"),
        TensorBoardSink(tmp / "tb"),
        WandbSink(project="bench", dir=tmp),
    ]


def _metricbus(tmp: Path, which: str, per_call: int) -> dict[str, float]:
    from producers import MetricLogger

    with MetricLogger(sinks=_sinks(tmp, which), pending_limit=2_000_000) as log:
        log.scalar("train/loss", 0.5, 0)
        log.scalars(VALUES, 0)
        log.flush()  # the hosts are up before the clock
        if per_call == 1:
            return _timed(lambda step: log.scalar("train/loss", 0.5, step), CALLS)
        return _timed(lambda step: log.scalars(VALUES, step), CALLS // 4)


def _end_to_end(tmp: Path, per_call: int) -> dict[str, float]:
    """Values per second from the first call until flush() returns, four sinks."""
    from producers import MetricLogger

    n = 1_000_000
    with MetricLogger(sinks=_sinks(tmp, "four")) as log:
        log.scalar("train/loss", 0.5, 0)
        log.flush()
        start, cpu0 = time.perf_counter(), time.process_time()
        if per_call == 1:
            for step in range(n):
                log.scalar("train/loss", 0.5, step)
        else:
            for step in range(n // per_call):
                log.scalars(VALUES, step)
        log.flush()
        seconds = time.perf_counter() - start
        return {"rate": n / seconds, "seconds": seconds, "trainer_cpu": time.process_time() - cpu0}


def _csv_direct(tmp: Path) -> dict[str, float]:
    with open(tmp / "m.csv", "w", newline="") as f:
        writer = csv.writer(f)
        return _timed(lambda step: writer.writerow((time.time(), step, "train/loss", 0.5)), CALLS // 4)


def _tensorboardx(tmp: Path) -> dict[str, float]:
    from tensorboardX import SummaryWriter

    writer = SummaryWriter(str(tmp))
    try:
        return _timed(lambda step: writer.add_scalar("train/loss", 0.5, step), 5_000)
    finally:
        writer.close()


def _wandb(tmp: Path) -> dict[str, float]:
    import wandb

    run = wandb.init(project="bench", dir=str(tmp))
    try:
        result = _timed(lambda step: run.log(VALUES, step=step), 1_000)
        return {k: v / len(VALUES) for k, v in result.items()}
    finally:
        run.finish()


CONTENDERS: dict[str, tuple[str, Callable[[Path], dict[str, float]]]] = {
    "floor_scalar": ("API floor: a method appending a tuple to a drained deque", lambda tmp: _floor(1)),
    "floor_scalars": ("API floor: the same call, building a dict of 10", lambda tmp: _floor(10)),
    "scalar_csv": ("MetricLogger.scalar, CsvSink alone", lambda tmp: _metricbus(tmp, "csv", 1)),
    "scalar_four": ("MetricLogger.scalar, CSV + JSONL + TB + W&B", lambda tmp: _metricbus(tmp, "four", 1)),
    "scalars_four": ("MetricLogger.scalars of 10, CSV + JSONL + TB + W&B", lambda tmp: _metricbus(tmp, "four", 10)),
    "csv_direct": ("csv.writer.writerow (direct)", _csv_direct),
    "tensorboardx": ("tensorboardX SummaryWriter.add_scalar (direct)", _tensorboardx),
    "wandb": ("wandb.log offline, per value of a 10-value row (direct)", _wandb),
}
END_TO_END = {
    "e2e_scalar": ("end to end, scalar, four sinks, until flush() returns", lambda tmp: _end_to_end(tmp, 1)),
    "e2e_scalars": ("end to end, scalars of 10, four sinks, until flush()", lambda tmp: _end_to_end(tmp, 10)),
}


def contender(name: str) -> dict[str, float]:
    os.environ.update(WANDB_MODE="offline", WANDB_SILENT="true")
    with tempfile.TemporaryDirectory() as d:
        os.environ["WANDB_DIR"] = d
        return {**CONTENDERS, **END_TO_END}[name][1](Path(d))


def main() -> None:
    if serve_contender(contender):
        return
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in {**CONTENDERS, **END_TO_END}}
    for _ in range(ROUNDS):  # alternate contenders, round after round: the machine's noise is shared
        for name, result in run_contenders(__file__, list(runs)).items():
            runs[name].append(result)
    med = {name: {k: statistics.median(r[k] for r in results) for k in results[0]} for name, results in runs.items()}
    rows = []
    for name, (label, _) in CONTENDERS.items():
        floor = med["floor_scalars" if name.startswith(("scalars", "floor_scalars")) else "floor_scalar"]
        rows.append(
            {
                "what": label,
                "value": med[name]["wall"] * 1e9,
                "unit": "ns/call",
                "cpu_ns": med[name]["cpu"] * 1e9,
                "x_floor_wall": med[name]["wall"] / floor["wall"],
                "x_floor_cpu": med[name]["cpu"] / floor["cpu"],
            }
        )
    for name, (label, _) in END_TO_END.items():
        rows.append(
            {
                "what": label,
                "value": med[name]["rate"],
                "unit": "values/s",
                "seconds": med[name]["seconds"],
                "trainer_cpu_s": med[name]["trainer_cpu"],
            }
        )
    write_result("calling_thread", rows)


if __name__ == "__main__":
    main()
