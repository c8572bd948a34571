"""The Redis bridge: N producer processes through one redis-server into one aggregator writing
CSV + JSONL, against the same events through one local bus; and what a RedisSink next to the
local sinks costs the training thread per value.

    python benchmarks/bench_redis.py [--producers 8 2] [--total 800000] [--rounds 3] [--repo OTHER]
                                     [--pinned 8 2]

Both sides log the same `--total` events (`--producers` processes share them out) into the same
two sinks on the same machine, and both are timed the same way: from the moment the logging
starts, every sink host already up (imports done, sinks open), to the moment the last sink has
flushed the last event (the aggregator's, for Redis). Starting and closing processes is left out
of both. The rounds interleave (Redis x N, local, Redis x M, ...) and the medians are reported,
with the CPU time each part of the pipeline spent (getrusage of each producer and of its sink
host, psutil for redis-server, process_time for the aggregator and the local trainer). Each
measurement runs in an interpreter of its own; `--repo` adds another checkout's metricbus (an
earlier commit, say) to the same rounds, so a before/after comparison sees the same machine.
`--pinned N` adds rows with the aggregator on one CPU and the N producers on the others: the
producers on machines of their own, as far as one machine can show it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
# `--root DIR`: the metricbus checkout this interpreter measures (see `measure`); default this one
ROOT = Path(sys.argv[sys.argv.index("--root") + 1]).resolve() if "--root" in sys.argv else HERE.parents[1]
sys.path.insert(0, str(HERE.parents[1]))  # benchmarks._common, tests.redis_server
sys.path.insert(0, str(ROOT))

import anyio  # noqa: E402
import psutil  # noqa: E402

from benchmarks._common import median_seconds, write_result  # noqa: E402
from bus import MetricBus, Origin, RetryPolicy  # noqa: E402
from producers import MetricLogger, RedisSource  # noqa: E402
from sinks import CsvSink, JsonlSink, RedisSink  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

# A producer is a training job of its own, as a launcher (torchrun, a shell, a scheduler) starts it:
# its own session, like the sink host it starts (start_new_session) and like `metricbus aggregate`
# in a service. Linux's autogroup scheduler (kernel.sched_autogroup_enabled=1, the default on
# desktop kernels and on this machine) shares the CPU between sessions first: as children in this
# script's session, the 8 trainers shared one group's share with the aggregator, which then got
# about 1/9 of 1/9 of the machine while they ran - a situation no deployment has (the aggregator
# is on a machine of its own, or at least in a session of its own). The local side already has
# its host in a session of its own.
_PRODUCER = """
import json, resource, sys
from bus import Origin
from producers import MetricLogger
from sinks import RedisSink
url, stream, rank, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
log = MetricLogger(origin=Origin(rank=rank))
log.add_sink(RedisSink(url, stream=stream))
log.flush()  # the sink host is up and its sink open
print("ready", flush=True)
sys.stdin.readline()
scalar = log.scalar
for step in range(n):
    scalar("x", 0.5, step)
log.close()
def cpu(who):
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime
print(json.dumps({"trainer": cpu(resource.RUSAGE_SELF), "host": cpu(resource.RUSAGE_CHILDREN)}), flush=True)
"""


def _cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def _tree_cpu(pid: int) -> tuple[float, float]:
    """CPU seconds so far of a process and of its live children (its sink host)."""
    proc = psutil.Process(pid)
    return _cpu(proc), sum(_cpu(child) for child in proc.children(recursive=True))


def end_to_end(
    url: str, redis_pid: int, out: Path, producers: int, total: int, tag: str, *, pinned: bool = False
) -> dict[str, Any]:
    """Wall and CPU seconds from 'go' to every event written and flushed at the aggregator.
    `pinned`: the aggregator on CPU 0 only and the producers (and their sink hosts) on the
    others, as when the producers run on machines of their own: the aggregator never waits
    for a core while they log, and they never get its core."""
    stream = f"bench-{tag}"
    each = total // producers
    cpus = sorted(os.sched_getaffinity(0))
    if pinned:
        os.sched_setaffinity(0, cpus[:1])
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _PRODUCER, url, stream, str(rank), str(each)],
            cwd=ROOT,  # `-c` imports from the current directory first: the checkout measured
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,  # a job of its own: see above _PRODUCER
            preexec_fn=(lambda: os.sched_setaffinity(0, cpus[1:])) if pinned else None,  # its host inherits it
        )
        for rank in range(producers)
    ]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    redis_proc = psutil.Process(redis_pid)

    async def aggregate() -> dict[str, Any]:
        source = RedisSource(url, stream=stream, count=100)
        sinks = [CsvSink(out / f"agg-{tag}.csv"), JsonlSink(out / f"agg-{tag}.jsonl")]
        async with MetricBus(sinks) as bus:
            bus.add_producer(source)
            await anyio.sleep(0.2)  # the source has made its group and waits for entries
            at_go = [_tree_cpu(p.pid) for p in procs]
            redis_go, agg_go = _cpu(redis_proc), time.process_time()
            start = time.perf_counter()
            for p in procs:
                assert p.stdin is not None
                p.stdin.write("go\n")
                p.stdin.flush()
            with anyio.fail_after(300):
                while source.stats().events < total:  # noqa: ASYNC110 - polling the source's counter
                    await anyio.sleep(0.005)
            await bus.flush()
            wall = time.perf_counter() - start
            agg_cpu, redis_cpu = time.process_time() - agg_go, _cpu(redis_proc) - redis_go
            source.stop()
        return {"wall": wall, "at_go": at_go, "aggregator": agg_cpu, "redis": redis_cpu}

    run = anyio.run(aggregate)
    trainers = hosts = 0.0
    for p, (trainer_go, host_go) in zip(procs, run.pop("at_go"), strict=True):
        assert p.stdout is not None
        used = json.loads(p.stdout.readline())  # after its close: the host is reaped, in RUSAGE_CHILDREN
        assert p.wait(60) == 0
        trainers += used["trainer"] - trainer_go  # each includes its own close
        hosts += used["host"] - host_go
    return {**run, "producers": trainers, "hosts": hosts}


def local(out: Path, producers: int, total: int, tag: str) -> dict[str, Any]:
    """The same events, logged by one process through one local bus into CSV + JSONL, one
    origin per would-be producer; timed from the first call (the host up) to the sinks flushed."""
    each = total // producers
    log = MetricLogger([CsvSink(out / f"local-{tag}.csv"), JsonlSink(out / f"local-{tag}.jsonl")])
    log.flush()  # the sink host is up and its sinks open
    me = psutil.Process()
    hosts = [c for c in me.children() if c.name() != "redis-server"]
    hosts_go = sum(_cpu(h) for h in hosts)
    cpu_go, start = time.process_time(), time.perf_counter()
    scalar = log.scalar
    for rank in range(producers):
        log.origin = Origin(rank=rank)
        for step in range(each):
            scalar("x", 0.5, step)
    log.flush()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_go
    hosts_cpu = sum(_cpu(h) for h in hosts) - hosts_go
    log.close()
    return {"wall": wall, "trainer": cpu, "host": hosts_cpu}


def per_call(out: Path, url: str | None, calls: int = 200_000) -> float:
    """Nanoseconds of the training thread per log.scalar with CSV + JSONL (+ a RedisSink)."""
    sinks = [CsvSink(out / "cost.csv"), JsonlSink(out / "cost.jsonl")]
    log = MetricLogger(sinks)
    if url is not None:
        log.add_sink(RedisSink(url, stream="cost"), retry=RetryPolicy())
    scalar = log.scalar

    def run() -> None:
        for step in range(calls):
            scalar("x", 0.5, step)

    times = []
    for _ in range(3):  # the loop alone, as the training thread sees it; the sinks catch up between rounds
        times.append(median_seconds(run, repeats=1))
        log.flush()
    seconds = sorted(times)[1]
    log.close()
    return seconds / calls * 1e9


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def measure(root: Path, what: str, url: str, redis_pid: int, out: Path, producers: int, total: int, tag: str) -> Any:
    """One measurement (`what`: "redis" or "local") of the checkout at `root`, in an interpreter
    of its own (this script again, with --one): imports, caches and garbage of one measurement
    never colour the next, and another checkout's metricbus is measured the same way."""
    args = [sys.executable, str(HERE), "--one", what, url, str(redis_pid), str(out), str(producers), str(total), tag]
    env = {**os.environ, "PYTHONPATH": str(root)}  # its producers and their hosts import that checkout only
    proc = subprocess.run([*args, "--root", str(root)], capture_output=True, text=True, check=False, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} x{producers} ({root}) failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def one(argv: list[str]) -> None:
    """The --one entry point: run one measurement here and print it as JSON."""
    what, url, redis_pid, out, producers, total, tag = argv[:7]
    if what in ("redis", "pinned"):
        result = end_to_end(url, int(redis_pid), Path(out), int(producers), int(total), tag, pinned=what == "pinned")
    else:
        result = local(Path(out), int(producers), int(total), tag)
    print(json.dumps(result))


def rows_of(
    label: str, total: int, local_runs: list[Any], redis_runs: dict[tuple[int, bool], list[Any]]
) -> list[dict[str, Any]]:
    """The rows of one checkout: the local bus, then each producer count and its ratio (the
    median of the per-round ratios, each round's Redis run against that round's local run)."""
    base = _median(local_runs, "wall")
    rows: list[dict[str, Any]] = [
        {
            "what": f"{label}the same events through one local bus -> CSV + JSONL",
            "value": total / base,
            "unit": "events/s",
            "seconds": round(base, 3),
            "cpu_s": {k: round(_median(local_runs, k), 3) for k in ("trainer", "host")},
        }
    ]
    for (n, pinned), runs in redis_runs.items():
        pin = ", the aggregator on a CPU of its own" if pinned else ""
        wall = _median(runs, "wall")
        ratios = [b["wall"] / r["wall"] for b, r in zip(local_runs, runs, strict=True)]
        rows += [
            {
                "what": f"{label}end to end, {n} processes x {total // n:,} via Redis -> CSV + JSONL{pin}",
                "value": total / wall,
                "unit": "events/s",
                "seconds": round(wall, 3),
                "cpu_s": {k: round(_median(runs, k), 3) for k in ("producers", "hosts", "redis", "aggregator")},
            },
            {
                "what": f"{label}end to end via Redis ({n} processes{pin}) / one local bus",
                "value": statistics.median(ratios),
                "unit": "x",
                "rounds": [round(x, 3) for x in ratios],
            },
        ]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--producers", type=int, nargs="+", default=[8, 2])
    parser.add_argument("--total", type=int, default=800_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repo", type=Path, help="another checkout to measure in the same rounds")
    parser.add_argument("--pinned", type=int, nargs="*", default=[], help="these producer counts again, pinned")
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    total = args.total
    roots = {"": ROOT} | ({f"[{args.repo.name}] ": args.repo.resolve()} if args.repo is not None else {})
    local_runs: dict[str, list[Any]] = {label: [] for label in roots}
    kinds = [(n, False) for n in args.producers] + [(n, True) for n in args.pinned]
    redis_runs: dict[str, dict[tuple[int, bool], list[Any]]] = {label: {k: [] for k in kinds} for label in roots}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        server = RedisServer(out / "redis")
        server.start()
        assert server.proc is not None
        try:
            for r in range(args.rounds):  # interleaved: a noisy moment hits every contender alike
                for label, root in roots.items():
                    for i, (n, pinned) in enumerate(kinds):
                        tag = f"{r}-{n}-{pinned:d}-{len(label)}"
                        what = "pinned" if pinned else "redis"
                        redis_runs[label][n, pinned].append(
                            measure(root, what, server.url, server.proc.pid, out, n, total, tag)
                        )
                        if i == 0:
                            local_runs[label].append(measure(root, "local", "", 0, out, n, total, tag))
                    print(
                        f"round {r} {label}: local {local_runs[label][-1]['wall']:.2f}s, "
                        + ", ".join(
                            f"redis x{n}{' pinned' if p else ''} {runs[-1]['wall']:.2f}s"
                            for (n, p), runs in redis_runs[label].items()
                        ),
                        flush=True,
                    )
            plain = per_call(out, None)
            bridged = per_call(out, server.url)
        finally:
            server.stop()
    rows = [row for label in roots for row in rows_of(label, total, local_runs[label], redis_runs[label])]
    rows += [
        {"what": "training thread per log.scalar, CSV + JSONL", "value": plain, "unit": "ns"},
        {"what": "training thread per log.scalar, CSV + JSONL + RedisSink", "value": bridged, "unit": "ns"},
    ]
    write_result("redis", rows)


if __name__ == "__main__":
    if "--one" in sys.argv:
        one(sys.argv[sys.argv.index("--one") + 1 :])
    else:
        main()
