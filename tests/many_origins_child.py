"""A child for tests/test_many_origins.py: N origins, 3 steps each, into one TensorBoard logdir,
a CSV and a JSONL file, under an open-file limit of 1,024 (the common default). Prints the sinks'
stats as JSON."""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import anyio

from bus import MetricBus, Origin, Scalar
from sinks import CsvSink, JsonlSink, TensorBoardSink

STEPS = 3


def origin(i: int) -> Origin:
    """Sites of 50 ranks each: the layout of federated sites that each run data-parallel ranks."""
    return Origin(site=f"site-{i // 50}", rank=i % 50)


async def main(root: Path, n: int, isolate: str) -> None:
    origins = [origin(i) for i in range(n)]
    start = time.perf_counter()
    async with MetricBus() as bus:
        bus.add_sink(TensorBoardSink(root / "tb"), isolate=isolate)  # type: ignore[arg-type]
        bus.add_sink(CsvSink(root / "metrics.csv"))
        bus.add_sink(JsonlSink(root / "events.jsonl"))
        for step in range(STEPS):
            await bus.publish_many([Scalar("loss", i + step / 10, step=step, origin=o) for i, o in enumerate(origins)])
    stats = {name: {"delivered": s.delivered, "state": s.state.value} for name, s in bus.stats().items()}
    print(json.dumps({"seconds": time.perf_counter() - start, "stats": stats}))


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))
    anyio.run(main, Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
