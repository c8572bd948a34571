"""One rank of a job logging through the job's shared sink host (no Redis): 10 values a step.

    torchrun --standalone --nproc_per_node=4 tests/job_child.py OUT STEPS --dist --expect PATH
    RANK=r WORLD_SIZE=4 python tests/job_child.py OUT STEPS --job NAME [--pause S] [--wait] [--hold]

Every rank adds the same sinks (OUT/job.csv, OUT/job.jsonl, TensorBoard in OUT/tb) to a plain
`MetricLogger(...)`: the job is found in the launcher's environment (or named with --job), and
the values are those of `ranks_child.values`, reduced per `ranks_child.REDUCE`. With --dist the
script computes the `all_reduce` of each step itself and counts metricbus's collectives (as
`ranks_child` does). Each rank writes OUT/rank<r>.json: where its sinks ran (the job host's pid),
how long its close() took, and the steps it logged. With --wait a rank prints "ready" and opens
its logger when a line comes on stdin (every rank attaches at the same instant). With --hold a
rank keeps its logger open after its last step until OUT/release exists, rewriting its report
(where its sinks run now: a killed host's successor) meanwhile; its report also says how often
its host was started again and which ranks the host's reducer named missing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.ranks_child import REDUCE, all_reduced, count_collectives, values  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("steps", type=int)
    parser.add_argument("--job", default=None)
    parser.add_argument("--pause", type=float, default=0.0)
    parser.add_argument("--deadline", type=float, default=10.0)
    parser.add_argument("--dist", action="store_true")
    parser.add_argument("--expect", type=Path)
    parser.add_argument("--wait", action="store_true")
    parser.add_argument("--hold", action="store_true")
    args = parser.parse_args()
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    counts: dict[str, int] = {}
    if args.dist:
        import torch.distributed as dist

        counts, own = count_collectives()  # before metricbus is imported
        dist.init_process_group("gloo")

    import msgspec

    from bus import RankReduce
    from producers import MetricLogger
    from sinks import CsvSink, JsonlSink, TensorBoardSink

    if args.wait:
        print("ready", flush=True)
        sys.stdin.readline()
    log = MetricLogger(job=args.job, ranks=RankReduce(world_size=world, metrics=REDUCE, deadline=args.deadline))
    csv = log.add_sink(CsvSink(args.out / "job.csv"))
    log.add_sink(JsonlSink(args.out / "job.jsonl"))
    log.add_sink(TensorBoardSink(args.out / "tb"))
    where = log.stats()[csv].where
    report = args.out / f"rank{rank}.json"

    def write_report(steps: int) -> None:
        tmp = report.with_suffix(".tmp")
        tmp.write_text(json.dumps({"where": log.stats()[csv].where, "steps": steps}))
        os.replace(tmp, report)  # whole, whenever the test reads it

    write_report(0)
    names = [f"v{i}" for i in range(10)]
    expect: dict[str, dict[str, float]] = {}
    for step in range(args.steps):
        mine = values(rank, step)
        log.scalars(dict(zip(names, mine, strict=True)), step)
        if args.dist:
            expect[str(step)] = all_reduced(mine, own["all_reduce"], world)
        if args.pause:
            time.sleep(args.pause)
        if args.hold and step % 10 == 9:
            write_report(step + 1)
    while args.hold and not (args.out / "release").exists():
        write_report(args.steps)
        time.sleep(0.05)
    start = time.monotonic()
    log.close()
    closed_in = time.monotonic() - start
    stats = log.stats()[csv]
    ranks = log.rank_stats
    missing = {} if ranks is None else {label: msgspec.structs.astuple(gone) for label, gone in ranks.missing.items()}
    final = {"where": where, "last_where": stats.where, "restarts": stats.restarts, "missing": missing}
    report.write_text(json.dumps({**final, "steps": args.steps, "close_s": closed_in}))
    if args.dist:
        if args.expect is not None:
            if rank == 0:
                args.expect.write_text(json.dumps(expect))
            Path(f"{args.expect}.collectives{rank}").write_text(json.dumps(counts))
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
