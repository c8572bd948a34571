"""Sinks in a worker process: same results, restarts when the worker dies, no stray processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import anyio
import psutil
import pytest

from bus import DeliveryError, InvalidConfig, MetricBus, ProcessSink, RetryPolicy, Scalar, Sink, SinkState
from sinks import JsonlSink, MemorySink, read_jsonl
from tests.helpers import normalized, wait_until, wait_until_sync
from tests.isolated_sinks import FailingSink, HangingSink

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[1]


def gone(pid: int) -> bool:
    return not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


async def test_a_sink_in_a_worker_writes_the_same_events(tmp_path: Path) -> None:
    events = [Scalar("x", v, step=i) for i, v in enumerate([1.5, float("nan"), float("inf"), -0.0])]
    sink = ProcessSink(JsonlSink(tmp_path / "e.jsonl"))
    async with MetricBus() as bus:
        bus.add_sink(sink)
        await bus.publish_many(events)
        await bus.flush()
        pid = sink.pid
        assert pid is not None and pid != os.getpid()
    assert normalized(read_jsonl(tmp_path / "e.jsonl")) == normalized(events)
    assert gone(pid)


async def test_isolate_option_wraps_the_sink_and_keeps_its_name(tmp_path: Path) -> None:
    async with MetricBus() as bus:
        name = bus.add_sink(JsonlSink(tmp_path / "e.jsonl"), isolate="process")
        await bus.publish(Scalar("x", 1.0, step=0))
    assert name == f"jsonl:{(tmp_path / 'e.jsonl').as_posix()}" and bus.stats()[name].delivered == 1


async def test_every_killed_worker_is_restarted_counted_and_with_block_nothing_is_lost(tmp_path: Path) -> None:
    # Whether a death is noticed by a failing request or while idle (the worker's exit code is
    # already known), it is one restart in the stats: the count never depends on timing.
    sink = ProcessSink(JsonlSink(tmp_path / "e.jsonl"))
    kills = 4
    async with MetricBus() as bus:
        name = bus.add_sink(sink, max_batch=100, retry=RetryPolicy(max_attempts=5, backoff=0.01))
        for round_ in range(kills + 1):
            start = round_ * 500
            await bus.publish_many([Scalar("x", float(i), step=i) for i in range(start, start + 500)])
            await bus.flush()
            if round_ < kills:
                pid = sink.pid
                assert pid is not None
                os.kill(pid, signal.SIGKILL)
                await wait_until(lambda pid=pid: gone(pid))  # type: ignore[misc]
        assert bus.stats()[name].restarts == kills
    stats = bus.stats()[name]
    assert stats.state is SinkState.CLOSED and stats.delivered == 2_500 and stats.dropped == {}
    assert stats.restarts == kills and stats.balanced
    steps = {e.step for e in read_jsonl(tmp_path / "e.jsonl")}  # type: ignore[union-attr]
    assert steps == set(range(2_500))  # at least once: a resent batch may appear twice


async def test_an_error_inside_the_worker_is_retried_then_the_sink_is_failed() -> None:
    healthy = MemorySink()
    with pytest.raises(DeliveryError, match="failed in pid"):
        async with MetricBus() as bus:
            bus.add_sink(FailingSink(), isolate="process", retry=RetryPolicy(max_attempts=2, backoff=0.001))
            bus.add_sink(healthy)
            await bus.publish(Scalar("x", 1.0, step=0))
    assert bus.stats()["FailingSink"].dropped == {"sink_failed": 1}
    assert len(healthy.events) == 1


async def test_a_hanging_worker_is_killed_at_the_shutdown_timeout(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    with anyio.fail_after(20), pytest.raises(DeliveryError):
        async with MetricBus(shutdown_timeout=0.5) as bus:
            bus.add_sink(HangingSink(pid_file), isolate="process", max_interval=0.001)
            await bus.publish(Scalar("x", 1.0, step=0))
            await wait_until(pid_file.exists, within=15)
    assert bus.stats()["HangingSink"].dropped == {"shutdown_timeout": 1}
    pid = int(pid_file.read_text())
    await wait_until(lambda: gone(pid))


def test_a_sink_that_cannot_be_pickled_is_refused_at_add_sink() -> None:
    class Local(Sink):
        async def write_batch(self, events: object) -> None: ...

    with pytest.raises(InvalidConfig, match="worker process"):
        ProcessSink(Local())


CHILD = """
import signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal (see test_shutdown)
from producers import MetricLogger
from sinks import JsonlSink
log = MetricLogger()
log.add_sink(JsonlSink(sys.argv[1]), isolate="process", max_interval=3600)
with log:
    for step in range(3_000):
        log.scalar("loss", 1.0 / (step + 1), step=step)
    log.flush()
    print(log.bus._routes[0].sink.pid, flush=True)
    while True:
        time.sleep(0.01)
"""


def test_ctrl_c_to_the_process_group_drains_through_the_worker_and_leaves_no_process(tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(CHILD))
    child = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "e.jsonl")],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        start_new_session=True,  # its own process group, like a job in a terminal
    )
    assert child.stdout is not None
    worker = int(child.stdout.readline())
    os.killpg(child.pid, signal.SIGINT)  # what Ctrl-C does: every process in the group
    child.wait(30)
    assert [e.step for e in read_jsonl(tmp_path / "e.jsonl")] == list(range(3_000))  # type: ignore[union-attr]
    wait_until_sync(lambda: gone(worker))
