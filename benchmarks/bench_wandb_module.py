"""A W&B script's `wandb.log`: real wandb (offline) next to `import producers.wandb as wandb`.

Data: N steps of 10 scalars, one `wandb.log(values)` per step (wandb's own step counter), the
loop a W&B script runs. Reported, as medians over a few interleaved repeats, each contender in a
fresh interpreter: the calling thread's cost per `log` call (after a first call, which starts
metricbus's W&B sink and its worker), and the whole script from `init` to the end of `finish()`
(every row on disk: wandb's run file; for metricbus the W&B sink's, written in its worker).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import run_contenders, serve_contender, write_result

STEPS = 5_000
VALUES = 10
REPEATS = 3


def contender(name: str) -> dict[str, float]:
    os.environ.update(WANDB_MODE="offline", WANDB_SILENT="true")
    if name == "direct":
        import wandb
    else:
        import producers.wandb as wandb  # type: ignore[no-redef]
    steps = [{f"train/metric_{k}": 1.0 / (i + k + 1) for k in range(VALUES)} for i in range(STEPS)]
    with tempfile.TemporaryDirectory() as d:
        began = time.perf_counter()
        run = wandb.init(project="bench", dir=d, config={"lr": 0.1})
        wandb.log({"warm_up": 0.0})
        start = time.perf_counter()
        for values in steps:
            wandb.log(values)
        logged = time.perf_counter()
        run.finish()
        done = time.perf_counter()
    return {"calling_s": logged - start, "total_s": done - began, "finish_s": done - logged}


def main() -> None:
    if serve_contender(contender):
        return
    runs = [run_contenders(__file__, ["direct", "metricbus"]) for _ in range(REPEATS)]  # interleaved
    d, m = ({k: statistics.median(r[name][k] for r in runs) for k in runs[0][name]} for name in ("direct", "metricbus"))
    rows = [
        {"what": "wandb.log offline: calling thread per call (10 scalars)", "value": d["calling_s"] / STEPS * 1e6,
         "unit": "us/call"},
        {"what": "producers.wandb.log: calling thread per call", "value": m["calling_s"] / STEPS * 1e6,
         "unit": "us/call", "x_direct": d["calling_s"] / m["calling_s"]},
        {"what": "wandb: init to end of finish", "value": d["total_s"], "unit": "s", "finish_s": d["finish_s"]},
        {"what": "producers.wandb: init to end of finish", "value": m["total_s"], "unit": "s",
         "finish_s": m["finish_s"]},
    ]  # fmt: skip
    write_result("wandb_module", rows)


if __name__ == "__main__":
    main()
