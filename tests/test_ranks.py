"""Every rank of a job into one run, reduced at the aggregator without a collective: real rank
processes (torchrun with gloo, and plain processes), a real redis-server, a real aggregator."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bus import DEFAULT_ORIGIN, MISSING_METRIC, MetricBus, Metrics, RankReduce
from producers import RedisSource
from sinks import MemorySink, read_jsonl
from tests.helpers import wait_until, wait_until_sync
from tests.rank_checks import NAMES, TORCHRUN, go, rank_rows, reap, want
from tests.ranks_child import REDUCE
from tests.redis_server import RedisServer
from tests.test_redis import caught_up

ROOT = Path(__file__).resolve().parent.parent
CHILD = Path(__file__).with_name("ranks_child.py")
pytestmark = pytest.mark.timeout(120)

_children: list[subprocess.Popen[bytes]] = []


@pytest.fixture(autouse=True)
def _no_child_left_behind() -> Iterator[None]:
    yield
    reap(_children)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    srv = RedisServer(tmp_path / "redis")
    srv.start()
    yield srv
    srv.stop()


def env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), **extra}


def start_rank(
    srv: RedisServer, stream: str, rank: int, steps: int, *, pause: float = 0.0, node: int | None = None
) -> subprocess.Popen[bytes]:
    extra = {"RANK": str(rank), "WORLD_SIZE": "4"} | ({"GROUP_RANK": str(node)} if node is not None else {})
    args = [sys.executable, str(CHILD), srv.url, stream, str(steps), "--pause", str(pause), "--wait"]
    proc = subprocess.Popen(args, cwd=ROOT, env=env(**extra), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    _children.append(proc)
    return proc


def job_rows(events: list[Any]) -> dict[int, dict[str, float]]:
    """The job's own series (origin without rank) by step."""
    rows: dict[int, dict[str, float]] = {}
    for e in events:
        if isinstance(e, Metrics) and e.origin == DEFAULT_ORIGIN:
            rows.setdefault(e.step, {}).update(e.values)
    return rows


# ---- torchrun: 4 ranks, gloo, `metricbus aggregate` with the plan's [ranks] ----


def test_torchrun_ranks_reduced_at_the_aggregator_equal_all_reduce_and_metricbus_issues_no_collective(
    server: RedisServer, tmp_path: Path
) -> None:
    steps = 200
    metrics = ", ".join(f'{k} = "{v}"' for k, v in REDUCE.items())
    plan = tmp_path / "plan.toml"
    plan.write_text(
        f'[[sinks]]\ntemplate = "sinks.JsonlSink"\nsettings = {{ path = "{(tmp_path / "job.jsonl").as_posix()}" }}\n'
        f"[ranks]\nworld_size = 4\ndeadline = 5.0\nmetrics = {{ {metrics} }}\n"
    )
    aggregator = subprocess.Popen(
        [
            *(sys.executable, "-m", "producers._cli", "aggregate", "--redis", server.url, "--stream", "job"),
            *("--plan", str(plan), "--stats", str(tmp_path / "stats.json"), "--no-pipeline-metrics"),
        ],
        cwd=ROOT,
        env=env(),
        stderr=open(tmp_path / "aggregate.err", "wb"),  # noqa: SIM115 - the child owns it
    )
    _children.append(aggregator)
    expect = tmp_path / "expect.json"
    run = subprocess.run(
        [
            *(str(TORCHRUN), "--standalone", "--nproc_per_node=4", str(CHILD), server.url, "job", str(steps)),
            *("--dist", "--expect", str(expect)),
        ],
        cwd=ROOT,
        env=env(OMP_NUM_THREADS="1"),
        capture_output=True,
        timeout=100,
    )
    assert run.returncode == 0, run.stderr.decode()[-3000:]
    wait_until_sync(lambda: caught_up(server, "job"), timeout=30)
    aggregator.send_signal(signal.SIGTERM)
    assert aggregator.wait(30) == 0, (tmp_path / "aggregate.err").read_text()

    for rank in range(4):
        assert json.loads(Path(f"{expect}.collectives{rank}").read_text()) == {}  # metricbus issued none
    events = read_jsonl(tmp_path / "job.jsonl")
    assert len(rank_rows(events)) == 4 * steps  # every rank's every step, kept
    rows = job_rows(events)
    reduced = json.loads(expect.read_text())
    assert sorted(rows) == list(range(steps))
    for step in range(steps):
        assert MISSING_METRIC not in rows[step]
        for name in NAMES:
            assert rows[step][name] == pytest.approx(reduced[str(step)][name], rel=1e-6, abs=1e-6), (step, name)
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["sources"][0]["ranks"]["complete"] == steps and stats["ok"]


# ---- kill -9 of a rank: the others whole, the missing rank named, nothing hangs ----


@pytest.mark.anyio
async def test_a_rank_killed_mid_run_is_named_from_then_on_and_the_others_are_whole(server: RedisServer) -> None:
    steps = 120
    procs = [start_rank(server, "kill", rank, steps, pause=0.02) for rank in range(4)]
    go(procs)
    memory = MemorySink()
    source = RedisSource(server.url, stream="kill", ranks=RankReduce(world_size=4, deadline=2.0, metrics=REDUCE))
    async with MetricBus([memory]) as agg:
        agg.add_producer(source)
        await wait_until(lambda: any(k[0] == 3 and k[1] >= 20 for k in rank_rows(memory.events)), within=60)
        os.kill(procs[3].pid, signal.SIGKILL)
        procs[3].wait(10)
        for p in procs[:3]:
            await wait_until(lambda p=p: p.poll() is not None, within=60)  # type: ignore[misc]
            assert p.returncode == 0
        await wait_until(lambda: caught_up(server, "kill"), within=30)
        await wait_until(lambda: len(job_rows(memory.events)) == steps, within=30)  # the last step at its deadline
        source.stop()
        await wait_until(lambda: not source.running, within=30)
    per_rank = rank_rows(memory.events)
    assert all((r, s) in per_rank for r in range(3) for s in range(steps))  # the others' data whole
    last = max(s for r, s in per_rank if r == 3)
    assert 20 <= last < steps - 1
    rows = job_rows(memory.events)
    for step in range(steps):
        present = [r for r in range(4) if (r, step) in per_rank]
        assert present == ([0, 1, 2, 3] if step <= last else [0, 1, 2])
        assert {k: rows[step][k] for k in NAMES} == pytest.approx(want(present, step), rel=1e-9)
        if step > last:
            assert rows[step][MISSING_METRIC] == 1.0  # never a silent partial mean
    stats = source.stats().ranks
    assert stats is not None and stats.missing["rank3"].first_step == last + 1
    assert stats.missing["rank3"].last_step == steps - 1


# ---- two "machines" (two groups of ranks) into one aggregator: the same series as one ----


async def reduced_run(server: RedisServer, stream: str, nodes: list[int | None], steps: int) -> dict[int, Any]:
    procs = [start_rank(server, stream, rank, steps, node=node) for rank, node in enumerate(nodes)]
    go(procs)
    memory = MemorySink()
    source = RedisSource(server.url, stream=stream, ranks=RankReduce(world_size=4, deadline=30.0, metrics=REDUCE))
    async with MetricBus([memory]) as agg:
        agg.add_producer(source)
        for p in procs:
            await wait_until(lambda p=p: p.poll() is not None, within=60)  # type: ignore[misc]
        await wait_until(lambda: source.stats().events == 4 * steps, within=30)
        source.stop()  # writes the last step, which no rank moved on from, at once
        await wait_until(lambda: not source.running, within=30)
    assert {e.origin.node for e in memory.events if e.origin.rank is not None} == {
        f"node{n}" if n is not None else "" for n in nodes
    }
    return job_rows(memory.events)


@pytest.mark.anyio
async def test_two_machines_into_one_aggregator_give_the_same_reduced_series_as_one(server: RedisServer) -> None:
    steps = 30
    one = await reduced_run(server, "one", [None] * 4, steps)
    two = await reduced_run(server, "two", [0, 0, 1, 1], steps)
    assert one == two
    assert sorted(one) == list(range(steps))
    for step in range(steps):
        assert one[step] == pytest.approx(want([0, 1, 2, 3], step), rel=1e-9)
