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

    python benchmarks/bench_ranks.py [--ranks 2] [--steps 2000]

Per step, the median over rounds of the mean over `steps`, on rank 0 (microseconds).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

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

    results = {
        name: _timed(fn, steps)
        for name, fn in (("every", every_rank), ("job", job_host), ("sync", sync_dist), ("zero", rank_zero))
    }
    log.close()
    job_log.close()
    if rank == 0:
        results["job_where"] = job_log.stats()[f"jsonl:{Path(out) / 'job.jsonl'}"].where
        ranks = job_log.rank_stats
        results["job_steps"] = -1 if ranks is None else ranks.steps
    if rank == 0:
        queue.put(results)
    dist.barrier()
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2000)
    args = parser.parse_args()
    from tests.redis_server import free_port

    torch.set_num_threads(1)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    with tempfile.TemporaryDirectory() as out:
        mp.spawn(_rank, args=(args.ranks, free_port(), args.steps, out, queue), nprocs=args.ranks, join=True)
        results = queue.get(timeout=60)
    us = {k: v * 1e6 for k, v in results.items() if isinstance(v, float)}
    rows = [
        {
            "what": f"every rank logs 10 values, reduced off the training path ({args.ranks} ranks)",
            "value": us["every"],
            "unit": "us/step",
        },
        {
            "what": f"every rank logs 10 values, the job host reduces them ({args.ranks} ranks, one host)",
            "value": us["job"],
            "unit": "us/step",
        },
        {
            "what": "sync_dist=True style: all_reduce per value on gloo, rank 0 logs",
            "value": us["sync"],
            "unit": "us/step",
        },
        {"what": "rank 0 only logs its own values", "value": us["zero"], "unit": "us/step"},
        {"what": "sync_dist style / every rank logging", "value": us["sync"] / us["every"], "unit": "x"},
        {"what": "sync_dist style / the job host reducing", "value": us["sync"] / us["job"], "unit": "x"},
    ]
    print(f"job host: {results['job_where']}, {results['job_steps']} steps reduced", file=sys.stderr)
    write_result("ranks", rows)


if __name__ == "__main__":
    main()
