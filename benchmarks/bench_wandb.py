"""W&B: direct `wandb.log` (offline) next to metricbus's WandbSink, same data, same machine.

Data: N steps of 10 scalars. Direct: one `wandb.log(values, step=i)` per step on the calling
thread, then `finish()`. metricbus: `publish_many` of pre-built Metrics events into a WandbSink
in its default worker process, then leaving the bus. In both, `wandb.init` (and for metricbus the
worker's start) happen before the clock. Reported, as medians over a few repeats: the calling
thread's cost per step and per scalar, end-to-end scalars/s including finish / close, and the
time spent in finish / close. Each contender runs in its own fresh interpreter, every repeat.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import anyio

from benchmarks._common import run_contenders, serve_contender, write_result

STEPS = 10_000
VALUES = 10
REPEATS = 3


def _values(i: int) -> dict[str, float]:
    return {f"train/metric_{k}": 1.0 / (i + k + 1) for k in range(VALUES)}


def _direct(tmp: Path) -> dict[str, float]:
    import wandb

    steps = [_values(i) for i in range(STEPS)]
    wandb.init(project="bench", dir=str(tmp), mode="offline", settings=wandb.Settings(silent=True, console="off"))
    start = time.perf_counter()
    for i, values in enumerate(steps):
        wandb.log(values, step=i)
    logged = time.perf_counter()
    wandb.finish()
    done = time.perf_counter()
    return {"calling_s": logged - start, "total_s": done - start, "close_s": done - logged}


async def _metricbus(tmp: Path) -> dict[str, float]:
    from bus import MetricBus, Metrics
    from sinks import WandbSink

    events = [Metrics(_values(i), step=i) for i in range(STEPS)]
    async with MetricBus() as bus:
        bus.add_sink(WandbSink(project="bench", dir=tmp), capacity=STEPS, max_batch=1_000)
        await bus.publish(Metrics({"warm_up": 0.0}, step=0))
        await bus.flush()  # worker and wandb run started before the clock
        start = time.perf_counter()
        await bus.publish_many(events)
        published = time.perf_counter()
        await bus.flush()
        flushed = time.perf_counter()
    done = time.perf_counter()
    return {"calling_s": published - start, "total_s": done - start, "close_s": done - flushed}


def contender(name: str) -> dict[str, float]:
    os.environ.update(WANDB_MODE="offline", WANDB_SILENT="true")
    with tempfile.TemporaryDirectory() as d:
        os.environ["WANDB_DIR"] = d
        return _direct(Path(d)) if name == "direct" else anyio.run(_metricbus, Path(d))


def _medians(results: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in results) for key in results[0]}


def main() -> None:
    if serve_contender(contender):
        return
    runs = [run_contenders(__file__, ["direct", "metricbus"]) for _ in range(REPEATS)]  # interleaved
    d, m = (_medians([r[name] for r in runs]) for name in ("direct", "metricbus"))
    scalars = STEPS * VALUES
    rows = [
        {"what": "wandb.log offline: calling thread per step (10 scalars)", "value": d["calling_s"] / STEPS * 1e6,
         "unit": "us/step", "per_scalar_us": d["calling_s"] / scalars * 1e6},
        {"what": "MetricBus.publish_many: calling thread per step", "value": m["calling_s"] / STEPS * 1e6,
         "unit": "us/step", "per_scalar_us": m["calling_s"] / scalars * 1e6},
        {"what": "wandb.log offline: end to end incl. finish", "value": scalars / d["total_s"], "unit": "scalars/s",
         "finish_s": d["close_s"]},
        {"what": "MetricBus -> WandbSink (worker): end to end incl. close", "value": scalars / m["total_s"],
         "unit": "scalars/s", "close_s": m["close_s"], "x_direct": d["total_s"] / m["total_s"]},
    ]  # fmt: skip
    write_result("wandb", rows)


if __name__ == "__main__":
    main()
