"""One process of tests/integrations/test_accelerate_ranks.py, under torchrun (2 processes, gloo):

    torchrun --standalone --nproc_per_node=2 tests/integrations/accelerate_child.py OUT STEPS

A tiny Accelerate training loop (a linear model, each process its own shard of the data through
`accelerator.prepare`) with `Accelerator(log_with=MetricBusTracker(...))`, the tracker
`register`ed so that `accelerator.get_tracker("metricbus")` is it on every process. Every step,
each process logs its own `train/loss` (mean over the ranks), `train/target_sum` (declared
"sum") and `train/err_max` (declared "max") through the tracker, and the main process logs
`train/lr` with `accelerator.log`. The same script computes the reference with Accelerate's own
collectives: `accelerator.reduce(t, "mean")`, `accelerator.reduce(t, "sum")`, and
`torch.distributed.all_reduce(t, MAX)` (Accelerate's reduce has no max).

Every collective of `torch.distributed` is wrapped before Accelerate is imported and counted,
separately, when a frame of metricbus (bus/, producers/, sinks/) is on the stack. Each process
writes OUT/rank<r>.json: its own values per step, the reference per step, those counts, where its
sinks ran (the job host's pid) and the metricbus threads left after `end_training()`.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.ranks_child import COLLECTIVES  # noqa: E402

METRICBUS = tuple(str(ROOT / package) + os.sep for package in ("bus", "producers", "sinks"))


def count_collectives() -> dict[str, dict[str, int]]:
    """Wrap torch.distributed's collectives; counts {"all": {name: n}, "metricbus": {name: n}}."""
    import torch.distributed as dist

    counts: dict[str, dict[str, int]] = {"all": {}, "metricbus": {}}
    for name in COLLECTIVES:
        fn = getattr(dist, name, None)
        if fn is None:
            continue

        def counted(*args: Any, _name: str = name, _fn: Any = fn, **kwargs: Any) -> Any:
            counts["all"][_name] = counts["all"].get(_name, 0) + 1
            frame = sys._getframe(1)
            while frame is not None:
                if frame.f_code.co_filename.startswith(METRICBUS):
                    counts["metricbus"][_name] = counts["metricbus"].get(_name, 0) + 1
                    break
                frame = frame.f_back  # type: ignore[assignment]
            return _fn(*args, **kwargs)

        setattr(dist, name, counted)
    return counts


def main() -> None:
    out, steps = Path(sys.argv[1]), int(sys.argv[2])
    counts = count_collectives()  # before Accelerate (and metricbus) are imported

    import torch
    import torch.distributed as dist
    from accelerate import Accelerator
    from torch.utils.data import DataLoader, TensorDataset

    from producers.integrations import MetricBusTracker
    from sinks import CsvSink, JsonlSink

    tracker = MetricBusTracker(
        sinks=[JsonlSink(out / "job.jsonl"), CsvSink(out / "job.csv")],
        reduce={"train/target_sum": "sum", "train/err_*": "max"},
    )
    accelerator = Accelerator(cpu=True, log_with=tracker)
    accelerator.init_trackers("tiny", config={"lr": 0.05, "model": {"in": 4, "out": 1}})
    tracker.register(accelerator)

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    generator = torch.Generator().manual_seed(1)
    n = steps * 4 * accelerator.num_processes
    data = TensorDataset(torch.randn(n, 4, generator=generator), torch.randn(n, 1, generator=generator))
    loader = DataLoader(data, batch_size=4)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)

    own: dict[str, dict[str, float]] = {}
    reference: dict[str, dict[str, float]] = {}
    for step, (x, y) in enumerate(loader):
        err = (model(x) - y).pow(2)
        loss = err.mean()
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
        mine = {"train/loss": loss.item(), "train/target_sum": y.sum().item(), "train/err_max": err.max().item()}
        accelerator.get_tracker("metricbus").log(mine, step=step)  # every process: its own values
        accelerator.log({"train/lr": 0.05 * (step + 1)}, step=step)  # the main process only
        own[str(step)] = mine
        worst = err.max().detach().clone()
        dist.all_reduce(worst, op=dist.ReduceOp.MAX)
        reference[str(step)] = {
            "train/loss": accelerator.reduce(loss.detach().clone(), "mean").item(),
            "train/target_sum": accelerator.reduce(y.sum().detach().clone(), "sum").item(),
            "train/err_max": worst.item(),
        }

    logger = accelerator.get_tracker("metricbus", unwrap=True)
    where = logger.stats()[logger.sink_names[0]].where
    rank = accelerator.process_index
    accelerator.end_training()  # finishes the tracker on every process (register), then the group
    left = [t.name for t in threading.enumerate() if t.name == "metricbus" and t.is_alive()]
    report = {"own": own, "reference": reference, "counts": counts, "where": where, "left": left}
    (out / f"rank{rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main()
