"""Lightning's `self.log(..., sync_dist=True)` reduced where the ranks meet, not on the training
path: real DDP (torchrun, 2 CPU processes, gloo), a real redis-server, a real aggregator
(RedisSource with a RankReducer), and Lightning's own CSVLogger on the same seed to compare with."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bus import DEFAULT_ORIGIN, MISSING_METRIC, MetricBus, Metrics, Origin, RankReduce
from producers import RedisSource
from sinks import MemorySink
from tests.helpers import wait_until
from tests.redis_server import RedisServer
from tests.test_redis import caught_up

ROOT = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).with_name("lightning_sync_child.py")
TORCHRUN = Path(sys.executable).with_name("torchrun")
SYNCED = {"train_loss", "target_sum", "err_max", "err_min", "loss", "val_loss", "val_worst"}
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    srv = RedisServer(tmp_path_factory.mktemp("redis"))
    srv.start()
    yield srv
    srv.stop()


def lightning_csv(path: Path) -> dict[tuple[int, str], float]:
    """What Lightning's CSVLogger wrote: {(step, name): value}."""
    with open(path, newline="") as f:
        return {(int(r["step"]), k): float(v) for r in csv.DictReader(f) for k, v in r.items() if v and k != "step"}


def series(events: list[Any], origin: Origin) -> dict[tuple[int, str], float]:
    """The values at `origin` (a job: no rank; or one rank): {(step, name): value}."""
    rows = [e for e in events if isinstance(e, Metrics) and e.origin == origin]
    return {(e.step, k): v for e in rows for k, v in e.values.items()}


@pytest.fixture(scope="module")
def fitted(server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Any]]:
    """Run the three fits under torchrun (once for the module's tests), then reduce the stream at
    an aggregator; returns the output folder and every event the aggregator's sink received."""
    tmp_path = tmp_path_factory.mktemp("fits")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [str(TORCHRUN), "--standalone", "--nproc_per_node=2", str(CHILD), server.url, "job", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stderr.decode()[-4000:]
    return tmp_path, _aggregate(server)


def _aggregate(server: RedisServer) -> list[Any]:
    import anyio

    async def main() -> list[Any]:
        memory = MemorySink()
        source = RedisSource(server.url, stream="job", ranks=RankReduce(world_size=2, deadline=30.0))
        async with MetricBus([memory]) as agg:
            agg.add_producer(source)
            await wait_until(lambda: caught_up(server, "job"), within=60)
            source.stop()  # the last step, which no rank moved on from, is written now
            await wait_until(lambda: not source.running, within=30)
        return list(memory.events)

    return anyio.run(main)


def test_sync_dist_is_reduced_at_the_aggregator_to_lightnings_values_with_no_all_reduce_for_logging(
    fitted: tuple[Path, list[Any]],
) -> None:
    out, events = fitted
    expected = lightning_csv(out / "lightning" / "version_0" / "metrics.csv")
    reports = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert {name for _, name in expected} == {*SYNCED - {"loss"}, "loss_step", "loss_epoch", "epoch"}
    for report in reports:
        # Lightning alone: an all_reduce per synced value (the counter sees them); metricbus: none
        assert set(report["lightning"]["all_reduce"]) - {"other"} == SYNCED
        assert set(report["reduced"]["all_reduce"]) - {"other"} == set()
        assert report["reduced"]["log_restored"] and report["monitored"]["log_restored"]

    job = series(events, Origin(site="reduced"))
    assert set(job) == set(expected)  # every value Lightning logged, at its step, and nothing else
    for key, value in expected.items():
        assert job[key] == pytest.approx(value, rel=1e-6, abs=1e-6), key  # float32: Lightning reduces in float32
    for rank in (0, 1):  # and each rank's own values are there too
        own = series(events, Origin(site="reduced", rank=rank))
        assert set(own) == set(expected)
    ranks = [series(events, Origin(site="reduced", rank=r)) for r in (0, 1)]
    assert any(ranks[0][k] != ranks[1][k] for k in expected if k[1] != "epoch")  # the ranks saw different data
    assert not any(name == MISSING_METRIC for _, name in job)
    assert not series(events, DEFAULT_ORIGIN)


def test_a_monitored_value_keeps_lightnings_sync_so_callbacks_read_the_synced_value_on_every_rank(
    fitted: tuple[Path, list[Any]],
) -> None:
    out, events = fitted
    expected = lightning_csv(out / "lightning" / "version_0" / "metrics.csv")
    reports = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    for report in reports:  # EarlyStopping(monitor="val_loss"): only val_loss is synced by Lightning
        assert set(report["monitored"]["all_reduce"]) - {"other"} == {"val_loss"}

    job = series(events, Origin(site="monitored"))
    assert set(job) == set(expected)
    for key, value in expected.items():
        assert job[key] == pytest.approx(value, rel=1e-6, abs=1e-6), key

    metrics = [report["monitored"]["callback_metrics"] for report in reports]
    last_val = max(step for step, name in expected if name == "val_loss")
    for rank in (0, 1):  # the monitored value: Lightning's synced one, on every rank
        assert metrics[rank]["val_loss"] == pytest.approx(expected[(last_val, "val_loss")], rel=1e-6)
    last_step = max(step for step, name in expected if name == "train_loss")
    for rank in (0, 1):  # a value no callback reads: this rank's own, as with sync_dist=False
        own = series(events, Origin(site="monitored", rank=rank))
        assert metrics[rank]["train_loss"] == pytest.approx(own[(last_step, "train_loss")], rel=1e-6)
    assert metrics[0]["train_loss"] != metrics[1]["train_loss"]
