"""Thousands of origins into one TensorBoard logdir, a CSV and a JSONL file, under the common
open-file limit of 1,024: every event is on disk, read back with each format's own reader. And
origins whose names once made one label keep their own runs after crossing the Redis bridge."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from bus import DEFAULT_ORIGIN, MetricBus, Origin, Scalar
from producers import RedisSource
from sinks import CsvSink, RedisSink, TensorBoardSink, read_jsonl
from tests.helpers import wait_until
from tests.many_origins_child import STEPS
from tests.many_origins_child import origin as origin_of
from tests.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[1]
CHILD = Path(__file__).with_name("many_origins_child.py")
ORIGINS = 5_000


@pytest.mark.timeout(180)
@pytest.mark.parametrize("isolate", ["process", "none"])  # the TensorBoard sink in its worker (default), in-process
def test_5000_origins_under_a_1024_open_file_limit_lose_nothing(tmp_path: Path, isolate: str) -> None:
    proc = subprocess.run(
        [sys.executable, str(CHILD), str(tmp_path), str(ORIGINS), isolate],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {s["delivered"] for s in report["stats"].values()} == {ORIGINS * STEPS}, report

    expected = {(origin_of(i).label, step, i + step / 10) for i in range(ORIGINS) for step in range(STEPS)}
    tensorboard = set()
    for run in sorted({p.parent for p in (tmp_path / "tb").rglob("events.out.tfevents.*")}):
        acc = EventAccumulator(str(run), size_guidance={"scalars": 0})
        acc.Reload()
        label = run.relative_to(tmp_path / "tb").as_posix()
        tensorboard |= {(label, e.step, e.value) for e in acc.Scalars("loss")}
    assert len(tensorboard) == len(expected)  # float32 values: compared below by their origin and step
    f32 = {(label, step): value for label, step, value in tensorboard}
    assert all(f32[(label, step)] == pytest.approx(value, rel=1e-6) for label, step, value in expected)

    with open(tmp_path / "metrics.csv", newline="", encoding="utf-8") as f:
        rows = {(r["origin"], int(r["step"]), float(r["value"])) for r in csv.DictReader(f)}
    assert rows == expected
    assert {(e.origin.label, e.step, e.value) for e in read_jsonl(tmp_path / "events.jsonl")} == expected  # type: ignore[union-attr]


# ---- origins that once shared a label, through the Redis bridge ----


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    srv = RedisServer(tmp_path / "redis")
    srv.start()
    yield srv
    srv.stop()


@pytest.mark.anyio
@pytest.mark.timeout(60)
async def test_origins_with_one_name_stay_apart_through_the_redis_aggregator(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    origins = [
        Origin(site="x"),
        Origin(node="x"),
        DEFAULT_ORIGIN,
        Origin(site="main"),
        Origin(site="a", rank=0),
        Origin(site="a", node="rank0"),
    ]
    sent = [Scalar("loss", i + step / 10, step, origin=o) for step in range(3) for i, o in enumerate(origins)]
    async with MetricBus() as bus:  # a producing process
        bus.add_sink(RedisSink(redis_server.url, stream="s"))
        await bus.publish_many(sent)
    source = RedisSource(redis_server.url, stream="s")
    async with MetricBus() as aggregator:
        aggregator.add_sink(TensorBoardSink(tmp_path / "tb"), isolate="none")
        aggregator.add_sink(CsvSink(tmp_path / "m.csv"))
        aggregator.add_producer(source)
        await wait_until(lambda: source.stats().events == len(sent) and source.stats().lag == 0, within=30)
    for i, origin in enumerate(origins):
        run = tmp_path / "tb" if origin == DEFAULT_ORIGIN else tmp_path / "tb" / origin.label
        acc = EventAccumulator(str(run), size_guidance={"scalars": 0})
        acc.Reload()
        assert [(e.step, e.value) for e in acc.Scalars("loss")] == [(s, pytest.approx(i + s / 10)) for s in range(3)]
    assert len({p.parent for p in (tmp_path / "tb").rglob("events.out.tfevents.*")}) == len(origins)
    with open(tmp_path / "m.csv", newline="", encoding="utf-8") as f:
        rows = Counter(row["origin"] for row in csv.DictReader(f))
    assert rows == {origin.label: 3 for origin in origins}
