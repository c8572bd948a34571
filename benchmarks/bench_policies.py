"""What each when-full policy does to the training loop when one sink is 10x too slow.

A loop of ~1 ms steps logs 10 scalars per step (`log.scalar` each) through a MetricLogger with a
CSV sink and a sink that can take only a tenth of that rate; buffers of 10,000 events (the sink's
`capacity` and the logger's `pending_limit`), so they fill within the run. For each policy of
the slow sink: the loop's steps/s over the run and over its last second (next to the same loop
with the CSV sink alone), the events the CSV sink wrote, and what the slow sink delivered and
dropped. Each contender runs in its own interpreter, in interleaved rounds.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import run_contenders, serve_contender, write_result
from bus import Event, Sink

SECONDS = 6.0
SCALARS_PER_STEP = 10
STEP_S = 0.001
SLOW_RATE = SCALARS_PER_STEP / STEP_S / 10  # events/s the slow sink can take: a tenth of the load
BUFFER = 10_000


class SlowSink(Sink):
    """Takes 1/SLOW_RATE seconds per event, as a remote service with a rate limit would."""

    async def write_batch(self, events: Sequence[Event]) -> None:
        time.sleep(len(events) / SLOW_RATE)  # noqa: ASYNC251 - a sink runs on its own thread


def run(policy: str) -> dict[str, float]:
    from producers import MetricLogger
    from sinks import CsvSink

    with tempfile.TemporaryDirectory() as tmp:
        log = MetricLogger(raise_on_loss=False, block_timeout=3600, shutdown_timeout=2.0, pending_limit=BUFFER)
        log.add_sink(CsvSink(Path(tmp) / "m.csv"), name="csv")
        if policy != "none":
            log.add_sink(SlowSink(), name="slow", when_full=policy, capacity=BUFFER)  # type: ignore[arg-type]
        names = [f"m{i}" for i in range(SCALARS_PER_STEP)]
        steps, start = 0, time.perf_counter()
        last_second = (0, start)
        while (now := time.perf_counter()) - start < SECONDS:
            if now - start < SECONDS - 1:
                last_second = (steps, now)
            for name in names:
                log.scalar(name, float(steps), step=steps)
            steps += 1
            time.sleep(STEP_S)
        elapsed = time.perf_counter() - start
        tail_rate = (steps - last_second[0]) / (start + elapsed - last_second[1])
        log.close()
        stats = log.stats()
    slow = stats.get("slow")
    return {
        "steps_per_s": steps / elapsed,
        "last_second_steps_per_s": tail_rate,
        "csv_delivered": stats["csv"].delivered,
        "slow_delivered": slow.delivered if slow else 0,
        "slow_dropped": slow.dropped_total if slow else 0,
    }


POLICIES = ["none", "block", "drop_oldest", "drop_newest"]


def main() -> None:
    if serve_contender(run):
        return
    rounds = [run_contenders(__file__, POLICIES) for _ in range(3)]  # interleaved rounds
    rows = []
    medians = {p: statistics.median(r[p]["steps_per_s"] for r in rounds) for p in POLICIES}
    for policy in POLICIES:
        last = rounds[-1][policy]
        rows.append(
            {
                "what": "CSV sink alone" if policy == "none" else f"CSV + a 10x slow sink, when_full={policy!r}",
                "value": medians[policy],
                "unit": "steps/s",
                "x_alone": medians[policy] / medians["none"],
                "last_second_steps_per_s": round(last["last_second_steps_per_s"]),
                "csv_events": last["csv_delivered"],
                "slow_delivered": last["slow_delivered"],
                "slow_dropped": last["slow_dropped"],
            }
        )
    write_result("policies", rows)


if __name__ == "__main__":
    main()
