"""Memory over a long run: process RSS while logging 500k scalars, metricbus next to tensorboardX.

Each step spends 100 us on "training" and logs 10 values (100k scalars/s: heavy logging).
metricbus: MetricLogger with CSV + JSONL sinks, `scalars` per step. tensorboardX: `add_scalars`
with the same values (it opens a writer per key and keeps every value in a dict for
`export_scalars_to_json`). RSS is sampled every 10% of the run; the growth after the first 10%
(warm-up) is what matters. Each contender runs in its own interpreter.

A loop that does no work at all produces faster than any sink writes; metricbus then holds at
most `pending_limit` events plus each sink's `capacity` (then blocks or drops by policy): memory
is bounded, not flat, in that case.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil

from benchmarks._common import run_contenders, serve_contender, write_result

STEPS = 50_000
STEP_SECONDS = 100e-6
VALUES = {f"metric_{k}": 0.1 * k for k in range(10)}


def _rss_curve(log: Callable[[int], None]) -> list[float]:
    proc = psutil.Process()
    curve = []
    for step in range(STEPS):
        deadline = time.perf_counter() + STEP_SECONDS
        log(step)
        while time.perf_counter() < deadline:  # the training step
            pass
        if step % (STEPS // 10) == 0:
            curve.append(proc.memory_info().rss / 2**20)
    curve.append(proc.memory_info().rss / 2**20)
    return curve


def contender(name: str) -> list[float]:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if name == "metricbus":
            from producers import MetricLogger
            from sinks import CsvSink, JsonlSink

            with MetricLogger(sinks=[CsvSink(tmp / "m.csv"), JsonlSink(tmp / "m.jsonl")]) as log:
                return _rss_curve(lambda step: log.scalars(VALUES, step))
        from tensorboardX import SummaryWriter

        writer = SummaryWriter(str(tmp))
        try:
            return _rss_curve(lambda step: writer.add_scalars("train", VALUES, step))
        finally:
            writer.close()


def main() -> None:
    if serve_contender(contender):
        return
    curves = run_contenders(__file__, ["metricbus", "tensorboardx"])
    rows = []
    for name, curve in curves.items():
        label = "MetricLogger.scalars (CSV+JSONL)" if name == "metricbus" else "tensorboardX add_scalars"
        rows.append(
            {
                "what": f"{label}: RSS growth after warm-up, {STEPS * len(VALUES):,} scalars",
                "value": curve[-1] - curve[1],
                "unit": "MiB",
                "rss_mib": [round(x, 1) for x in curve],
            }
        )
    write_result("memory", rows)


if __name__ == "__main__":
    main()
