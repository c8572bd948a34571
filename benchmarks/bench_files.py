"""End to end into CSV and JSONL files: events/s through MetricBus, next to writing them directly.

metricbus: publish_many of pre-built Scalar events, then leaving the bus (drained, closed).
Baselines: csv.writer.writerow per row, and json.dumps + write per line, the code people write
by hand. Each contender runs in its own interpreter; the best of 3 runs is kept.
"""

from __future__ import annotations

import csv
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import anyio

from benchmarks._common import run_contenders, serve_contender, write_result
from bus import Event, MetricBus, Scalar
from sinks import CsvSink, JsonlSink

N = 500_000


def _events() -> list[Event]:
    return [Scalar("train/loss", 1.0 / (i + 1), step=i) for i in range(N)]


async def _through_bus(kind: str, path: Path) -> float:
    events = _events()
    sink = CsvSink(path) if kind == "csv" else JsonlSink(path)
    start = time.perf_counter()
    async with MetricBus() as bus:
        bus.add_sink(sink, capacity=50_000, max_batch=10_000)
        for i in range(0, N, 10_000):
            await bus.publish_many(events[i : i + 10_000])
    return N / (time.perf_counter() - start)


def _direct_csv(path: Path) -> float:
    start = time.perf_counter()
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(("wall_time", "step", "name", "value"))
        for i in range(N):
            writer.writerow((time.time(), i, "train/loss", 1.0 / (i + 1)))
    return N / (time.perf_counter() - start)


def _direct_json(path: Path) -> float:
    start = time.perf_counter()
    with open(path, "w") as f:
        for i in range(N):
            f.write(json.dumps({"wall_time": time.time(), "step": i, "name": "train/loss", "value": 1.0 / (i + 1)}))
            f.write("\n")
    return N / (time.perf_counter() - start)


def contender(name: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "out"
        if name == "csv_direct":
            return _direct_csv(path)
        if name == "jsonl_direct":
            return _direct_json(path)
        return anyio.run(_through_bus, name.split("_")[0], path)


def main() -> None:
    if serve_contender(lambda name: max(contender(name) for _ in range(3))):
        return
    r = run_contenders(__file__, ["csv_direct", "csv_bus", "jsonl_direct", "jsonl_bus"])
    rows = [
        {"what": "csv.writer.writerow per row (direct)", "value": r["csv_direct"], "unit": "events/s"},
        {"what": "MetricBus -> CsvSink, end to end", "value": r["csv_bus"], "unit": "events/s",
         "x_direct": r["csv_bus"] / r["csv_direct"]},
        {"what": "json.dumps + write per line (direct)", "value": r["jsonl_direct"], "unit": "events/s"},
        {"what": "MetricBus -> JsonlSink, end to end", "value": r["jsonl_bus"], "unit": "events/s",
         "x_direct": r["jsonl_bus"] / r["jsonl_direct"]},
    ]  # fmt: skip
    write_result("files", rows)


if __name__ == "__main__":
    main()
