"""Integrations across real processes: framework adapters on producing processes publish through
a RedisSink to a real redis-server, and one aggregator (a RedisSource on a MetricLogger, or the
`metricbus aggregate` service with a plan) writes a run per origin: Lightning DDP ranks into one
TensorBoard logdir, NVFlare sites into one W&B group, OpenFL collaborators into a plan's
log_metric_callback. Every value each process logged is checked at the far end."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from producers import MetricLogger, RedisSource
from sinks import TensorBoardSink
from tests.helpers import wait_until_sync
from tests.integrations import redis_site
from tests.redis_server import RedisServer
from tests.wandb_reader import read_runs

ROOT = Path(__file__).resolve().parents[2]
SITE = Path(redis_site.__file__)
pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    srv = RedisServer(tmp_path / "redis")
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts, each in a session of its own: whatever is left of one at the end
    (Lightning's rank processes included) is killed by its process group."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def start(
    started: list[subprocess.Popen[bytes]], args: Sequence[str], err: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    with open(err, "wb") as f:
        proc = subprocess.Popen(
            [sys.executable, *args], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    started.append(proc)
    return proc


def finished(proc: subprocess.Popen[bytes], err: Path, timeout: float = 60.0) -> None:
    assert proc.wait(timeout) == 0, err.read_text()[-4000:]


def wait_caught_up(url: str, stream: str, group: str, timeout: float = 30.0) -> None:
    """Wait until the group has been handed the stream's last entry and has acknowledged every
    entry: the aggregator has published, flushed (its sinks wrote them) and acknowledged
    everything the producers wrote. Call it once the producers have exited."""
    with redis.Redis.from_url(url) as client:

        def caught_up() -> bool:
            last = client.xinfo_stream(stream)["last-generated-id"]
            for info in client.xinfo_groups(stream):
                if info["name"] == group.encode():
                    return bool(info["pending"] == 0 and info["last-delivered-id"] == last)
            return False  # the aggregator has not made its group yet

        wait_until_sync(caught_up, timeout=timeout)


def start_aggregator(
    started: list[subprocess.Popen[bytes]], tmp: Path, plan: str, extra: Sequence[str] = (), **env: str
) -> subprocess.Popen[bytes]:
    (tmp / "plan.toml").write_text(plan)
    args = ["-m", "producers._cli", "aggregate", "--plan", str(tmp / "plan.toml"), "--stats", str(tmp / "stats.json")]
    return start(started, [*args, *extra], tmp / "aggregator.log", env={**os.environ, **env})


def stop_aggregator(proc: subprocess.Popen[bytes], tmp: Path) -> dict[str, Any]:
    """SIGTERM, exit status 0 (every sink got every event), and the final stats of its source."""
    proc.send_signal(signal.SIGTERM)
    finished(proc, tmp / "aggregator.log")
    stats: dict[str, Any] = json.loads((tmp / "stats.json").read_text())
    (source,) = stats["sources"]
    assert source["duplicates"] == 0 and source["bad_entries"] == 0 and source["pending"] == 0
    return source


def f32(value: float) -> float:
    return float(np.float32(value))


# ---- 1. Lightning DDP ranks -> Redis -> one TensorBoard logdir ----

# Lightning picks a free MASTER_PORT on MASTER_ADDR; gloo talks over the loopback interface only.
_DIST_VARS = {"MASTER_ADDR", "MASTER_PORT", "RANK", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "GROUP_RANK"}
LOOPBACK_DDP = {
    **{k: v for k, v in os.environ.items() if k not in _DIST_VARS},
    "MASTER_ADDR": "127.0.0.1",
    "GLOO_SOCKET_IFNAME": "lo",
}


def test_lightning_ddp_ranks_reach_one_tensorboard_logdir_as_a_run_per_rank_via_redis(
    server: RedisServer, tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    """A user trains with `strategy="ddp"` on 2 CPU processes, each rank's MetricBusLogger
    (all_ranks=True) publishing to Redis, and one aggregator writes the TensorBoard logdir: it
    holds rank0/ and rank1/, and each holds every value Lightning logged on that rank, at
    Lightning's steps (the ranks see different batches, so their train_loss differ)."""
    out, tb = tmp_path / "ddp", tmp_path / "tb"
    out.mkdir()
    source = RedisSource(server.url, stream="ddp", group="tensorboard", consumer="agg")
    aggregator = MetricLogger(shutdown_timeout=30.0)
    aggregator.add_sink(TensorBoardSink(tb))
    aggregator.add_producer(source)
    try:
        ddp = start(
            processes, [str(SITE), "ddp", server.url, "ddp", str(out), "4"], tmp_path / "ddp.log", env=LOOPBACK_DDP
        )
        finished(ddp, tmp_path / "ddp.log", timeout=90.0)  # rank 0 returns once rank 1 has exited 0
        wait_caught_up(server.url, "ddp", "tensorboard")
    finally:
        aggregator.close()

    logged = {r: json.loads((out / f"lightning-rank{r}.json").read_text())["calls"] for r in (0, 1)}
    assert sorted(p.name for p in tb.iterdir()) == ["rank0", "rank1"]  # Origin(rank=r).label
    for rank, calls in logged.items():
        assert [step for step, _ in calls] == [0, 1, 2, 3]  # log_every_n_steps=1, max_steps=4
        run = EventAccumulator(str(tb / f"rank{rank}"), size_guidance={"scalars": 0})
        run.Reload()
        names = {name for _, values in calls for name in values}
        assert names == {"train_loss", "batch_mean", "epoch"}
        assert set(run.Tags()["scalars"]) == names
        for name in names:
            expected = [(step, f32(values[name])) for step, values in calls if name in values]
            assert [(e.step, e.value) for e in run.Scalars(name)] == expected
    losses = [[values["train_loss"] for _, values in logged[r]] for r in (0, 1)]
    assert losses[0] != losses[1]  # each rank's own values, not one rank's twice

    with open(out / "csv" / "version_0" / "metrics.csv") as f:  # Lightning's own CSVLogger, rank 0
        header, *rows = [line.rstrip("\n").split(",") for line in f]
    from_csv = [(int(row[header.index("step")]), float(row[header.index("train_loss")])) for row in rows]
    reference = [(step, values["train_loss"]) for step, values in logged[0]]
    assert [s for s, _ in from_csv] == [s for s, _ in reference]  # the recorder saw what Lightning logged
    assert all(math.isclose(a, b, rel_tol=1e-6) for (_, a), (_, b) in zip(from_csv, reference, strict=True))

    stats = source.stats()
    assert len(stats.producers) == 2  # one RedisSink per rank process
    assert stats.duplicates == stats.bad_entries == 0
    assert stats.events == sum(len(calls) for calls in logged.values()) + 2  # + one Hparams per rank


# ---- 2. NVFlare sites -> Redis -> `metricbus aggregate` -> one W&B group ----

SITES = ["site-1", "site-2", "site-3"]
ROUNDS = 5


def test_nvflare_sites_reach_one_wandb_group_as_a_run_per_site_via_metricbus_aggregate(
    server: RedisServer, tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    """A user runs three NVFlare site processes, each with an NVFlareWriter over a RedisSink, and
    `metricbus aggregate` with a plan holding an offline WandbSink: the W&B directory holds one
    run per site, all in one group, and each run every value its site logged, at its round."""
    wandb_dir = tmp_path / "wb"
    wandb_dir.mkdir()
    plan = (
        '[[sinks]]\ntemplate = "sinks.WandbSink"\n'
        'settings = { project = "nvflare-redis", group = "fl-job", mode = "offline", '
        f'dir = "{wandb_dir.as_posix()}" }}\n'
        'options = { rate = "none" }\n'  # every round a row (W&B's default is 10 rows/s, reduced)
    )
    agg = start_aggregator(
        processes,
        tmp_path,
        plan,
        # the aggregator's own health series (every 5 s) would be a run of its own in W&B once this
        # runs past 5 s, as on a busy machine: this test is about the sites' runs
        ["--redis", server.url, "--stream", "nvflare", "--consumer", "agg", "--no-pipeline-metrics"],
        WANDB_MODE="offline",
        WANDB_SILENT="true",
    )
    sites = [
        (
            start(
                processes,
                [str(SITE), "site", server.url, "nvflare", name, str(i), str(ROUNDS)],
                tmp_path / f"{name}.log",
            ),
            name,
        )
        for i, name in enumerate(SITES)
    ]
    for proc, name in sites:
        finished(proc, tmp_path / f"{name}.log")
    wait_caught_up(server.url, "nvflare", "metricbus", timeout=60.0)
    source = stop_aggregator(agg, tmp_path)

    assert len(source["producers"]) == len(SITES)
    assert source["events"] == len(SITES) * ROUNDS * 2  # add_scalar + log per round
    runs = read_runs(wandb_dir)
    assert sorted(runs) == SITES
    assert {run.group for run in runs.values()} == {"fl-job"}
    for i, name in enumerate(SITES):
        history = runs[name].history
        for key, value in (("train_loss", redis_site.site_loss), ("val_acc", redis_site.site_acc)):
            got = [(row["metricbus/step"], row[key]) for row in history if key in row]
            assert got == [(rnd, value(rnd, i)) for rnd in range(ROUNDS)], (name, key)


# ---- 3. OpenFL collaborators -> Redis -> a plan's RedisSource and log_metric_callback ----

COLLABORATORS = ["hospital-a", "hospital-b", "hospital-c"]


def _expected_calls(name: str, index: int, rounds: int) -> list[list[Any]]:
    calls: list[list[Any]] = []
    for rnd in range(rounds):
        calls.append([name, redis_site.TRAIN_TASK, "loss", redis_site.collaborator_loss(rnd, index), rnd])
        for metric, value in redis_site.collaborator_metrics(rnd, index).items():
            calls.append([name, redis_site.VALIDATE_TASK, metric, value, rnd])
    return calls


def test_openfl_plan_callback_on_the_aggregator_sees_every_collaborators_metric_via_redis(
    server: RedisServer, tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    """A user writes an OpenFL-style aggregator plan: a `[[producers]]` RedisSource and a
    `[log_metric_callback]` template. Three collaborator processes publish with their own site
    origins, task and round as context; the callback is called once per metric, as OpenFL calls
    it: (node_name = the site, task_name, metric_name, metric, round_number = the round, not the
    collaborator's step), each collaborator's calls in the order it logged them."""
    calls_file = tmp_path / "calls.jsonl"
    plan = (
        '[[producers]]\ntemplate = "producers.RedisSource"\n'
        f'settings = {{ url = "{server.url}", stream = "openfl", group = "openfl-aggregator", consumer = "agg" }}\n'
        '[log_metric_callback]\ntemplate = "tests.integrations.redis_site.record_call"\n'
        f'settings = {{ path = "{calls_file.as_posix()}" }}\n'
    )
    agg = start_aggregator(processes, tmp_path, plan)  # no --redis: the plan names the source
    rounds = 4
    collaborators = [
        (
            start(
                processes,
                [str(SITE), "collaborator", server.url, "openfl", name, str(i), str(rounds)],
                tmp_path / f"{name}.log",
            ),
            name,
        )
        for i, name in enumerate(COLLABORATORS)
    ]
    for proc, name in collaborators:
        finished(proc, tmp_path / f"{name}.log")
    wait_caught_up(server.url, "openfl", "openfl-aggregator")
    source = stop_aggregator(agg, tmp_path)

    assert len(source["producers"]) == len(COLLABORATORS)
    calls = [json.loads(line) for line in calls_file.read_text().splitlines()]
    for i, name in enumerate(COLLABORATORS):
        assert [c for c in calls if c[0] == name] == _expected_calls(name, i, rounds)
    assert len(calls) == len(COLLABORATORS) * rounds * 3  # nothing else, nothing twice
