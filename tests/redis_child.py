"""A producing process for the Redis tests: a MetricLogger with a RedisSink.

    python tests/redis_child.py URL STREAM RANK N [--every K --pause S] [--when-full P]

logs N scalars "x" at steps 0..N-1 with origin rank RANK (pausing S seconds every K steps, so a
run lasts long enough to be interrupted), closes, and prints its RedisSink's SinkStats as JSON.
"""

from __future__ import annotations

import argparse
import sys
import time

import msgspec

from bus import Origin, RetryPolicy
from producers import MetricLogger
from sinks import RedisSink


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("stream")
    parser.add_argument("rank", type=int)
    parser.add_argument("n", type=int)
    parser.add_argument("--every", type=int, default=0)
    parser.add_argument("--pause", type=float, default=0.0)
    parser.add_argument("--when-full", default="block")
    args = parser.parse_args()
    log = MetricLogger(origin=Origin(rank=args.rank), shutdown_timeout=30.0, raise_on_loss=False)
    # 60 attempts, at most 0.5 s apart: rides out a Redis outage of ~25 s
    name = log.add_sink(
        RedisSink(args.url, stream=args.stream),
        when_full=args.when_full,
        max_interval=0.05,
        retry=RetryPolicy(max_attempts=60, backoff=0.05, max_backoff=0.5),
    )
    for step in range(args.n):
        log.scalar("x", float(step), step)
        if args.every and step % args.every == args.every - 1:
            time.sleep(args.pause)  # the "training step" of this simulated loop
    log.close()
    sys.stdout.write(msgspec.json.encode(log.stats()[name]).decode() + "\n")


if __name__ == "__main__":
    main()
