"""The Redis bridge: 8 producer processes x 100,000 events through one redis-server into one
aggregator writing CSV + JSONL, against the same events through one local bus; and what a
RedisSink next to the local sinks costs the training thread per value.

    python benchmarks/bench_redis.py [--producers 8] [--events 100000]

End to end runs from the moment every producer is started and ready (imports done, logger open)
to the moment the aggregator has published every event and its sinks have flushed them.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import anyio

from benchmarks._common import median_seconds, write_result
from bus import MetricBus, Origin, RetryPolicy
from producers import MetricLogger, RedisSource
from sinks import CsvSink, JsonlSink, RedisSink
from tests.redis_server import RedisServer

_PRODUCER = """
import sys
from bus import Origin
from producers import MetricLogger
from sinks import RedisSink
url, rank, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
log = MetricLogger(origin=Origin(rank=rank))
log.add_sink(RedisSink(url, stream="bench"))
print("ready", flush=True)
sys.stdin.readline()
scalar = log.scalar
for step in range(n):
    scalar("x", 0.5, step)
log.close()
"""


def end_to_end(url: str, out: Path, producers: int, events: int) -> float:
    """Seconds from 'go' to every event written at the aggregator."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _PRODUCER, url, str(rank), str(events)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for rank in range(producers)
    ]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    total = producers * events

    async def aggregate() -> float:
        source = RedisSource(url, stream="bench", count=100)
        async with MetricBus([CsvSink(out / "agg.csv"), JsonlSink(out / "agg.jsonl")]) as bus:
            bus.add_producer(source)
            await anyio.sleep(0.2)  # the source has made its group and waits for entries
            start = time.perf_counter()
            for p in procs:
                assert p.stdin is not None
                p.stdin.write("go\n")
                p.stdin.flush()
            with anyio.fail_after(300):
                while source.stats().events < total:  # noqa: ASYNC110 - polling the source's counter
                    await anyio.sleep(0.005)
            await bus.flush()
            elapsed = time.perf_counter() - start
            source.stop()
        return elapsed

    elapsed = anyio.run(aggregate)
    for p in procs:
        assert p.wait(60) == 0
    return elapsed


def local(out: Path, producers: int, events: int) -> float:
    """The same events, logged by one process through one local bus into CSV + JSONL."""
    start = time.perf_counter()
    with MetricLogger([CsvSink(out / "local.csv"), JsonlSink(out / "local.jsonl")]) as log:
        for rank in range(producers):
            log.origin = Origin(rank=rank)
            for step in range(events):
                log.scalar("x", 0.5, step)
    return time.perf_counter() - start


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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--producers", type=int, default=8)
    parser.add_argument("--events", type=int, default=100_000)
    args = parser.parse_args()
    total = args.producers * args.events
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        server = RedisServer(out / "redis")
        server.start()
        try:
            e2e = end_to_end(server.url, out, args.producers, args.events)
            base = local(out, args.producers, args.events)
            plain = per_call(out, None)
            bridged = per_call(out, server.url)
        finally:
            server.stop()
    rows = [
        {
            "what": f"end to end, {args.producers} processes x {args.events:,} via Redis -> CSV + JSONL",
            "value": total / e2e,
            "unit": "events/s",
            "seconds": round(e2e, 3),
        },
        {"what": "the same events through one local bus -> CSV + JSONL", "value": total / base, "unit": "events/s"},
        {"what": "end to end via Redis / one local bus", "value": base / e2e, "unit": "x"},
        {"what": "training thread per log.scalar, CSV + JSONL", "value": plain, "unit": "ns"},
        {"what": "training thread per log.scalar, CSV + JSONL + RedisSink", "value": bridged, "unit": "ns"},
    ]
    write_result("redis", rows)


if __name__ == "__main__":
    main()
