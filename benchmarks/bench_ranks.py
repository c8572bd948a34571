"""What logging 10 values a step costs the training thread of each rank, four ways, in one run of
2 (or --ranks) gloo processes on CPU:

    every rank logs, reduced later    `log.scalars(...)` on every rank (a MetricLogger: the values
                                      are appended; the reduction is the aggregator's, off the
                                      training path, `metricbus aggregate --ranks N`)
    every rank logs, job host reduces `log.scalars(...)` on every rank of a MetricLogger in a job:
                                      every rank ships to the job's one sink host on the machine,
                                      which reduces the ranks (mean) and writes the job's series
    sync_dist=True style              an `all_reduce` per value on gloo, `.item()`, then rank 0 logs
                                      (what Lightning's `self.log(..., sync_dist=True)` does)
    rank 0 only                       rank 0 logs its own values, the others nothing (hides them)

and the same in a real Lightning fit (`strategy="ddp"`, the ranks' gloo group, a tiny model),
10 values a step logged with `self.log(..., sync_dist=True)`:

    Lightning syncs                   Lightning's own CSVLogger: an all_reduce per value per step
    metricbus reduce_ranks            MetricBusLogger(reduce_ranks=True) over a JsonlSink: no
                                      all_reduce; each rank's value goes to the job's reducer
    Lightning, sync_dist=False        CSVLogger, no sync: what Lightning's own logging path costs
    no logging                        the same fit logging nothing (the step's own cost)

    python benchmarks/bench_ranks.py [--ranks 2] [--steps 2000] [--lightning-steps 300]

Per step, the median over rounds of the mean over `steps`, on rank 0 (microseconds); Lightning's
rows: the fit's time per step from the 20th batch to the end, less the fit that logs nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from benchmarks._common import write_result

NAMES = [f"train/v{i}" for i in range(10)]


def _timed(fn, steps: int, rounds: int = 3) -> float:  # type: ignore[no-untyped-def]
    """Median over rounds of seconds per step; every rank runs the same rounds in lockstep."""
    times = []
    for r in range(rounds):
        dist.barrier()
        start = time.perf_counter()
        for step in range(r * steps, (r + 1) * steps):  # steps go on across rounds, as in training
            fn(step)
        times.append((time.perf_counter() - start) / steps)
    return sorted(times)[len(times) // 2]


def _rank(rank: int, world: int, port: int, steps: int, out: str, queue: mp.Queue) -> None:  # type: ignore[type-arg]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    from bus import Origin
    from producers import MetricLogger
    from sinks import JsonlSink

    values = torch.rand(10)  # a step's 10 scalars, as 0-d tensors would be after .detach()
    log = MetricLogger([JsonlSink(Path(out) / f"rank{rank}.jsonl")], origin=Origin(rank=rank), job=False)
    job_log = MetricLogger([JsonlSink(Path(out) / "job.jsonl")])  # the job, from the environment

    def job_host(step: int) -> None:
        job_log.scalars(dict(zip(NAMES, values.tolist(), strict=True)), step)

    def every_rank(step: int) -> None:
        log.scalars(dict(zip(NAMES, values.tolist(), strict=True)), step)

    def sync_dist(step: int) -> None:
        reduced = []
        for i in range(10):
            t = values[i].clone()
            dist.all_reduce(t)
            reduced.append(t.item() / world)
        if rank == 0:
            log.scalars(dict(zip(NAMES, reduced, strict=True)), step)

    def rank_zero(step: int) -> None:
        if rank == 0:
            log.scalars(dict(zip(NAMES, values.tolist(), strict=True)), step)

    results: dict[str, object] = {
        name: _timed(fn, steps)
        for name, fn in (("every", every_rank), ("job", job_host), ("sync", sync_dist), ("zero", rank_zero))
    }
    log.close()
    job_log.close()
    if rank == 0:
        results["job_where"] = job_log.stats()[f"jsonl:{Path(out) / 'job.jsonl'}"].where
        ranks = job_log.rank_stats
        results["job_steps"] = -1 if ranks is None else ranks.steps
        queue.put(results)
    dist.barrier()
    dist.destroy_process_group()


def _lightning_rank(rank: int, world: int, port: int, steps: int, out: str, queue: mp.Queue) -> None:  # type: ignore[type-arg]
    """One rank of three Lightning fits; Lightning finds the ranks in the environment."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), NODE_RANK="0"
    )
    os.environ["WORLD_SIZE"] = str(world)
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import CSVLogger
    from torch.utils.data import DataLoader, TensorDataset

    from producers.integrations import MetricBusLogger
    from sinks import JsonlSink

    class Net(pl.LightningModule):
        def __init__(self, log_values: bool, sync: bool) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)
            self.log_values, self.sync = log_values, sync

        def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
            x, y = batch
            err = (self.layer(x) - y).pow(2)
            if self.log_values:
                for i, name in enumerate(NAMES):
                    self.log(name, err[i % len(err)].mean(), sync_dist=self.sync)
            return err.mean()

        def configure_optimizers(self):  # type: ignore[no-untyped-def]
            return torch.optim.SGD(self.parameters(), lr=0.01)

    class Clock(pl.Callback):
        warm = 20

        def on_train_batch_start(self, trainer, module, batch, batch_idx):  # type: ignore[no-untyped-def]
            if batch_idx == self.warm:
                self.start = time.perf_counter()

        def on_train_end(self, trainer, module):  # type: ignore[no-untyped-def]
            self.per_step = (time.perf_counter() - self.start) / (trainer.global_step - self.warm)

    data = DataLoader(TensorDataset(torch.randn(steps * 4 * world, 4), torch.randn(steps * 4 * world, 1)), batch_size=4)
    results: dict[str, list[float]] = {"lightning": [], "metricbus": [], "nosync": [], "none": []}
    for _ in range(3):
        for variant in results:
            if variant == "metricbus":
                logger: object = MetricBusLogger([JsonlSink(Path(out) / f"lt{rank}.jsonl")], reduce_ranks=True)
            else:
                logger = CSVLogger(out, name=f"lt{rank}")
            clock = Clock()
            trainer = pl.Trainer(
                logger=logger,
                callbacks=[clock],
                accelerator="cpu",
                devices=world,
                strategy="ddp",
                max_epochs=1,
                log_every_n_steps=1,
                enable_checkpointing=False,
                enable_progress_bar=False,
                enable_model_summary=False,
            )
            trainer.fit(Net(variant != "none", variant != "nosync"), data)
            results[variant].append(clock.per_step)
    if rank == 0:
        queue.put({k: sorted(v)[len(v) // 2] for k, v in results.items()})


def _spawn(fn, world: int, steps: int) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    from tests.redis_server import free_port

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    with tempfile.TemporaryDirectory() as out:
        mp.spawn(fn, args=(world, free_port(), steps, out, queue), nprocs=world, join=True)
        results: dict[str, Any] = queue.get(timeout=60)
    return {k: v * 1e6 if isinstance(v, float) else v for k, v in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--lightning-steps", type=int, default=300)
    args = parser.parse_args()

    torch.set_num_threads(1)
    us = _spawn(_rank, args.ranks, args.steps)
    lt = _spawn(_lightning_rank, args.ranks, args.lightning_steps)
    rows = [
        {
            "what": f"every rank logs 10 values, reduced off the training path ({args.ranks} ranks)",
            "value": us["every"],
            "unit": "us/step",
        },
        {
            "what": "sync_dist=True style: all_reduce per value on gloo, rank 0 logs",
            "value": us["sync"],
            "unit": "us/step",
        },
        {"what": "rank 0 only logs its own values", "value": us["zero"], "unit": "us/step"},
        {
            "what": f"every rank logs 10 values, the job host reduces them ({args.ranks} ranks, one host)",
            "value": us["job"],
            "unit": "us/step",
        },
        {"what": "sync_dist style / every rank logging", "value": us["sync"] / us["every"], "unit": "x"},
        {"what": "sync_dist style / the job host reducing", "value": us["sync"] / us["job"], "unit": "x"},
        {
            "what": f"Lightning fit, self.log(sync_dist=True) x10, Lightning syncs: logging cost ({args.ranks} ranks)",
            "value": lt["lightning"] - lt["none"],
            "unit": "us/step",
        },
        {
            "what": "Lightning fit, the same with MetricBusLogger(reduce_ranks=True): logging cost",
            "value": lt["metricbus"] - lt["none"],
            "unit": "us/step",
        },
        {
            "what": "Lightning fit, the same with sync_dist=False (Lightning's own logging path): logging cost",
            "value": lt["nosync"] - lt["none"],
            "unit": "us/step",
        },
        {"what": "Lightning fit logging nothing: the step itself", "value": lt["none"], "unit": "us/step"},
    ]
    print(f"job host: {us['job_where']}, {us['job_steps']} steps reduced", file=sys.stderr)
    write_result("ranks", rows)


if __name__ == "__main__":
    main()
