"""One rank of a job for the cross-rank tests: 10 values a step through a RedisSink, nothing else.

    python tests/ranks_child.py URL STREAM STEPS [--pause S] [--expect PATH]
    torchrun --nproc_per_node=4 tests/ranks_child.py URL STREAM STEPS --dist --expect PATH

The rank comes from RANK (and the node from GROUP_RANK) as torchrun sets them. Every rank logs
`v0`..`v9` at each step: float32 values known from (rank, step), so a test can compute every
reduction itself. With --dist the script joins a gloo process group and computes, itself, the
`all_reduce` (SUM, MIN, MAX; the mean as SUM / world size: gloo has no AVG) of each step's values;
rank 0 writes them to --expect as JSON, and each rank to --expect + ".collectives<rank>" how many
collectives metricbus issued (counted by wrapping torch.distributed's collectives before metricbus
is imported: the script's own calls go to the functions it saved first). With --wait a rank
prints "ready" once its logger is open and starts when a line comes on stdin.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

COLLECTIVES = (
    "all_reduce",
    "all_gather",
    "all_gather_object",
    "all_gather_into_tensor",
    "all_to_all",
    "barrier",
    "broadcast",
    "broadcast_object_list",
    "gather",
    "reduce",
    "reduce_scatter",
    "reduce_scatter_tensor",
    "scatter",
    "monitored_barrier",
)
REDUCE = {"v0": "mean", "v1": "mean", "v2": "mean", "v3": "sum", "v4": "sum", "v5": "sum"}
REDUCE |= {"v6": "min", "v7": "min", "v8": "max", "v9": "max"}
"""How the job reduces each value: the plan's [ranks] metrics, and the op the script checks."""


def values(rank: int, step: int) -> list[float]:
    """This rank's 10 values at `step`, float32-exact, different per rank and step."""
    import numpy as np

    raw = [((rank + 1) * 37 + step * 13 + i * 7) % 101 / 7.0 - 5.0 for i in range(10)]
    return [float(v) for v in np.asarray(raw, dtype=np.float32)]


def all_reduced(mine: list[float], all_reduce: Any, world: int) -> dict[str, float]:
    """What `torch.distributed.all_reduce` makes of this rank's values of a step, per name, with
    each name's reduction (SUM, MIN, MAX; the mean as SUM / world size: gloo has no AVG)."""
    import torch
    import torch.distributed as dist

    tensor = torch.tensor(mine, dtype=torch.float32)
    reduced = {}
    for op in ("sum", "min", "max"):
        t = tensor.clone()
        all_reduce(t, op=getattr(dist.ReduceOp, op.upper()))
        reduced[op] = t.tolist()
    reduced["mean"] = [v / world for v in reduced["sum"]]
    return {f"v{i}": reduced[REDUCE[f"v{i}"]][i] for i in range(len(mine))}


def count_collectives() -> tuple[dict[str, int], dict[str, Any]]:
    """Wrap every collective of torch.distributed with a counter; returns (counts, originals)."""
    import torch.distributed as dist

    counts: dict[str, int] = {}
    originals: dict[str, Any] = {}
    for name in COLLECTIVES:
        fn = getattr(dist, name, None)
        if fn is None:
            continue
        originals[name] = fn

        def counted(*args: Any, _name: str = name, _fn: Any = fn, **kwargs: Any) -> Any:
            counts[_name] = counts.get(_name, 0) + 1
            return _fn(*args, **kwargs)

        setattr(dist, name, counted)
    return counts, originals


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("stream")
    parser.add_argument("steps", type=int)
    parser.add_argument("--pause", type=float, default=0.0)
    parser.add_argument("--dist", action="store_true")
    parser.add_argument("--expect", type=Path)
    parser.add_argument("--wait", action="store_true", help='print "ready", then wait for a line on stdin')
    args = parser.parse_args()
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    counts: dict[str, int] = {}
    if args.dist:
        import torch.distributed as dist

        counts, own = count_collectives()  # before metricbus is imported
        dist.init_process_group("gloo")

    from producers import MetricLogger, origin_from_env
    from sinks import RedisSink

    # under torchrun the ranks share the job's host, which forwards them to Redis unreduced: the
    # aggregator reduces (ranks=False: the host must not write the job's rows as well)
    log = MetricLogger(origin=origin_from_env(), shutdown_timeout=30.0, ranks=False)
    log.add_sink(RedisSink(args.url, stream=args.stream), max_interval=0.05)
    names = [f"v{i}" for i in range(10)]
    if args.wait:  # every rank starts logging at once, as ranks in lockstep do
        print("ready", flush=True)
        sys.stdin.readline()
    expect: dict[str, dict[str, float]] = {}
    for step in range(args.steps):
        mine = values(rank, step)
        log.scalars(dict(zip(names, mine, strict=True)), step)
        if args.dist:
            expect[str(step)] = all_reduced(mine, own["all_reduce"], world)
        if args.pause:
            time.sleep(args.pause)
    log.close()
    if args.dist:
        if args.expect is not None:  # rank 0: the reductions; every rank: metricbus's collectives
            if rank == 0:
                args.expect.write_text(json.dumps(expect))
            Path(f"{args.expect}.collectives{rank}").write_text(json.dumps(counts))
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
