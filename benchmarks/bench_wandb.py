"""W&B: direct `wandb.log` (offline) next to metricbus's WandbSink, same data, same run.

Data: N steps of 10 scalars. Direct: one `run.log(values, step=i)` per step on the calling
thread, then `finish()`. metricbus: `publish_many` of pre-built Metrics events into a WandbSink in
its default worker process (started before the clock), then leaving the bus. Reported: the
calling thread's cost per step for direct logging, end-to-end scalars/s for both, and the time
spent in finish / close. Each contender runs in its own interpreter.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import anyio

from benchmarks._common import run_contenders, serve_contender, write_result

STEPS = 5_000
VALUES = 10


def _values(i: int) -> dict[str, float]:
    return {f"train/metric_{k}": 1.0 / (i + k + 1) for k in range(VALUES)}


def _direct(tmp: Path) -> dict[str, float]:
    import wandb

    run = wandb.init(project="bench", dir=str(tmp), mode="offline", settings=wandb.Settings(silent=True))
    start = time.perf_counter()
    for i in range(STEPS):
        run.log(_values(i), step=i)
    logged = time.perf_counter()
    run.finish()
    done = time.perf_counter()
    per_step_us = (logged - start) / STEPS * 1e6
    return {"per_step_us": per_step_us, "rate": STEPS * VALUES / (done - start), "close": done - logged}


async def _metricbus(tmp: Path) -> dict[str, float]:
    from bus import MetricBus, Metrics
    from sinks import WandbSink

    events = [Metrics(_values(i), step=i) for i in range(STEPS)]
    async with MetricBus() as bus:
        bus.add_sink(WandbSink(project="bench", dir=tmp), capacity=STEPS, max_batch=1_000)
        await bus.publish(Metrics({"warm-up": 0.0}, step=0))
        await bus.flush()  # worker and wandb run started before the clock
        start = time.perf_counter()
        await bus.publish_many(events)
        await bus.flush()
        flushed = time.perf_counter()
    done = time.perf_counter()
    return {"rate": STEPS * VALUES / (flushed - start), "close": done - flushed}


def contender(name: str) -> dict[str, float]:
    os.environ.update(WANDB_MODE="offline", WANDB_SILENT="true")
    with tempfile.TemporaryDirectory() as d:
        os.environ["WANDB_DIR"] = d
        return _direct(Path(d)) if name == "direct" else anyio.run(_metricbus, Path(d))


def main() -> None:
    if serve_contender(contender):
        return
    r = run_contenders(__file__, ["direct", "metricbus"])
    d, m = r["direct"], r["metricbus"]
    rows = [
        {"what": "wandb run.log offline, calling-thread cost per step (10 values)", "value": d["per_step_us"],
         "unit": "us/step"},
        {"what": "wandb run.log offline, end to end incl. finish", "value": d["rate"], "unit": "scalars/s",
         "finish_s": d["close"]},
        {"what": "MetricBus -> WandbSink (worker), end to end", "value": m["rate"], "unit": "scalars/s",
         "x_direct": m["rate"] / d["rate"], "close_s": m["close"]},
    ]  # fmt: skip
    write_result("wandb", rows)


if __name__ == "__main__":
    main()
