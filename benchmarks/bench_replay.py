"""Replay throughput: a 500,000-event JSONL log replayed into JSONL and into CSV, in events/s,
next to writing the same events directly through a MetricBus into the same sinks.

replay: `replay([log], [sink])` end to end: reading the file, decoding and validating every
line, publishing in batches, draining and closing the sink. direct: publish_many of pre-built
events, then leaving the bus (as in bench_files). Also a TensorBoard logdir of 100,000 scalars
replayed into JSONL: TensorBoard's own record reader (pure-Python crc32c) sets that pace. The
logs are written once, by JsonlSink and TensorBoardSink; each contender runs in its own
interpreter, and the best of 3 runs is kept.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import anyio

from benchmarks._common import run_contenders, serve_contender, write_result
from bus import Event, MetricBus, Scalar, Sink
from producers._replay import replay
from sinks import CsvSink, JsonlSink, TensorBoardSink

N = 500_000
N_TENSORBOARD = 100_000
CONTENDERS = ["jsonl_direct", "jsonl_replay", "csv_direct", "csv_replay", "tensorboard_replay"]


def _events(n: int) -> list[Event]:
    return [Scalar("train/loss", 1.0 / (i + 1), step=i) for i in range(n)]


def _sink(kind: str, path: Path) -> Sink:
    return CsvSink(path) if kind == "csv" else JsonlSink(path)


async def _write(events: list[Event], sink: Sink) -> None:
    """Publish pre-built events into one sink, with the sink options replay uses."""
    async with MetricBus() as bus:
        bus.add_sink(sink, capacity=100_000, max_batch=10_000, isolate="none")
        for i in range(0, len(events), 10_000):
            await bus.publish_many(events[i : i + 10_000])


def _direct(kind: str, out: Path) -> float:
    events = _events(N)
    start = time.perf_counter()
    anyio.run(_write, events, _sink(kind, out))
    return N / (time.perf_counter() - start)


def _replay(source: Path, kind: str, out: Path) -> float:
    start = time.perf_counter()
    stats = replay([source], [_sink(kind, out)])
    seconds = time.perf_counter() - start
    assert stats.ok and stats.bad == 0, stats
    return stats.events / seconds


def contender(name: str, logs: Path) -> float:
    kind, how = name.split("_")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        if how == "direct":
            return _direct(kind, out)
        if kind == "tensorboard":
            return _replay(logs / "tensorboard", "jsonl", out)
        return _replay(logs / "events.jsonl", kind, out)


def _logs_arg() -> Path:
    parser = argparse.ArgumentParser()
    parser.add_argument("--logs", type=Path, required=True)
    args, _ = parser.parse_known_args()
    return Path(args.logs)


def main() -> None:
    if serve_contender(lambda name: max(contender(name, _logs_arg()) for _ in range(3))):
        return
    with tempfile.TemporaryDirectory() as tmp:
        logs = Path(tmp)
        anyio.run(_write, _events(N), JsonlSink(logs / "events.jsonl"))
        anyio.run(_write, _events(N_TENSORBOARD), TensorBoardSink(logs / "tensorboard"))
        r = run_contenders(__file__, CONTENDERS, "--logs", str(logs))
    rows = [
        {"what": "MetricBus -> JsonlSink, pre-built events (direct)", "value": r["jsonl_direct"], "unit": "events/s"},
        {"what": "replay 500k-event JSONL log -> JsonlSink", "value": r["jsonl_replay"], "unit": "events/s",
         "x_direct": r["jsonl_replay"] / r["jsonl_direct"]},
        {"what": "MetricBus -> CsvSink, pre-built events (direct)", "value": r["csv_direct"], "unit": "events/s"},
        {"what": "replay 500k-event JSONL log -> CsvSink", "value": r["csv_replay"], "unit": "events/s",
         "x_direct": r["csv_replay"] / r["csv_direct"]},
        {"what": "replay TensorBoard logdir (100k scalars) -> JsonlSink", "value": r["tensorboard_replay"],
         "unit": "events/s"},
    ]  # fmt: skip
    write_result("replay", rows)


if __name__ == "__main__":
    main()
