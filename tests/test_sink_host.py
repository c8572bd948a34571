"""The sink host: sinks in a separate process, with real processes, signals and kills.

The training process only appends and ships; these tests check what that promises: the same
events on disk as in-process, a killed host replaced without losing or repeating events, a
killed trainer whose host still writes everything it was sent, sinks that cannot move staying
in the trainer, and no process left behind.
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import anyio
import psutil
import pytest

from bus import DeliveryError, InvalidConfig, MetricBus, RetryPolicy, Scalar, Sink, SinkState
from producers import MetricLogger
from sinks import CsvSink, JsonlSink, MemorySink, read_jsonl
from tests.helpers import normalized, wait_until, wait_until_sync
from tests.isolated_sinks import DyingCsvSink, DyingJsonlSink, FailingSink, HangingSink

ROOT = Path(__file__).resolve().parents[1]


def gone(pid: int) -> bool:
    return not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def host_pid(where: str) -> int:
    """The pid in a SinkStats.where such as 'host shared (pid 1234)'."""
    return int(where.strip().rsplit("pid ", 1)[1].rstrip(")"))


@pytest.mark.anyio
@pytest.mark.parametrize("isolate", ["host", "process"])
async def test_an_async_bus_sink_in_a_host_writes_the_same_events(tmp_path: Path, isolate: str) -> None:
    events = [Scalar("x", v, step=i) for i, v in enumerate([1.5, float("nan"), float("inf"), -0.0])]
    async with MetricBus() as bus:
        name = bus.add_sink(JsonlSink(tmp_path / "e.jsonl"), isolate=isolate)  # type: ignore[arg-type]
        await bus.publish_many(events)
        await bus.flush()
        stats = bus.stats()[name]
        assert stats.delivered == 4 and stats.balanced
        pid = host_pid(stats.where)
        assert pid != os.getpid()
    assert normalized(read_jsonl(tmp_path / "e.jsonl")) == normalized(events)
    assert bus.stats()[name].state is SinkState.CLOSED
    assert gone(pid)


def test_the_logger_runs_movable_sinks_in_one_host_and_keeps_the_others() -> None:
    memory = MemorySink()

    class Local(Sink):  # defined in a function: a host cannot import it
        async def write_batch(self, events: object) -> None: ...

    with MetricLogger(sinks=[memory, Local()]) as log:
        log.add_sink(JsonlSink(Path(os.devnull)), name="jsonl")
        log.add_sink(CsvSink(Path(os.devnull)), name="csv")
        log.scalar("x", 1.0, step=0)
        log.flush()
        where = {name: s.where for name, s in log.stats().items()}
    assert where["memory"] == where["Local"] == "local"
    assert where["jsonl"] == where["csv"] and where["jsonl"].startswith("host shared")
    assert memory.values("x") == [(0, 1.0)]


def test_asking_a_sink_that_cannot_move_to_move_is_an_error() -> None:
    class Local(Sink):
        async def write_batch(self, events: object) -> None: ...

    with MetricLogger() as log, pytest.raises(InvalidConfig, match="cannot run in a sink host"):
        log.add_sink(Local(), isolate="process")


@pytest.mark.anyio
async def test_an_error_inside_the_host_is_retried_then_the_sink_is_failed() -> None:
    healthy = MemorySink()
    with pytest.raises(DeliveryError, match="failed in pid"):
        async with MetricBus() as bus:
            bus.add_sink(FailingSink(), isolate="process", retry=RetryPolicy(max_attempts=2, backoff=0.001))
            bus.add_sink(healthy)
            await bus.publish(Scalar("x", 1.0, step=0))
    stats = bus.stats()["FailingSink"]
    assert stats.dropped == {"sink_failed": 1} and stats.balanced
    assert f"failed in pid {host_pid(stats.where)}" in (stats.last_error or "")
    assert len(healthy.events) == 1


@pytest.mark.anyio
async def test_a_sink_hanging_in_its_host_is_abandoned_at_the_shutdown_timeout(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    started = time.monotonic()
    with anyio.fail_after(20), pytest.raises(DeliveryError):
        async with MetricBus(shutdown_timeout=0.5) as bus:
            bus.add_sink(HangingSink(pid_file), isolate="process", max_interval=0.001)
            await bus.publish(Scalar("x", 1.0, step=0))
            await wait_until(pid_file.exists, within=15)
    assert time.monotonic() - started < 15
    assert bus.stats()["HangingSink"].dropped == {"shutdown_timeout": 1}
    pid = int(pid_file.read_text())
    await wait_until(lambda: gone(pid))


def test_a_killed_host_is_replaced_and_every_event_arrives_once(tmp_path: Path) -> None:
    """kill -9 of the host, three times while the loop logs: a new host is started, the batches
    the old one had not settled are sent again, and what it had settled is not written twice."""
    path = tmp_path / "e.jsonl"
    n, kills = 30_000, 3
    with MetricLogger(sinks=[JsonlSink(path)]) as log:
        killed: list[int] = []
        for step in range(n):
            log.scalar("loss", float(step), step=step)
            if step % (n // (kills + 1)) == n // (kills + 1) - 1 and len(killed) < kills:
                log.flush()  # the host is up and has written: now kill it mid-stream
                pid = host_pid(log.stats()[f"jsonl:{path.as_posix()}"].where)
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                for tail in range(200):  # more events while it is dead, before anything notices
                    log.scalar("tail", float(tail), step=step)
        log.flush()
        stats = log.stats()[f"jsonl:{path.as_posix()}"]
    assert stats.restarts == kills and stats.balanced
    steps = [e.step for e in read_jsonl(path) if e.name == "loss"]  # type: ignore[union-attr]
    assert sorted(steps) == list(range(n))  # every event, none twice
    assert stats.delivered == n + kills * 200
    assert all(gone(pid) for pid in killed)


@pytest.mark.parametrize("kind", ["jsonl", "csv"])
def test_a_host_killed_between_a_write_and_its_record_writes_that_batch_once(tmp_path: Path, kind: str) -> None:
    """kill -9 of the host right after a file sink's write returned, before the host recorded it:
    the batch is sent again, and the new host first cuts the file back to where the record says
    it ended, so every event is in the file once."""
    marker = tmp_path / "died"
    path = tmp_path / f"e.{kind}"
    sink = DyingJsonlSink(path, 3, marker) if kind == "jsonl" else DyingCsvSink(path, 3, marker)
    n = 3_000
    with MetricLogger(sinks=[sink]) as log:
        for step in range(n):
            log.scalar("loss", float(step), step=step)
            if step % 300 == 299:
                log.flush()  # a batch each: the host dies after writing the third
        stats = log.stats()[sink.name]
    assert marker.exists() and stats.restarts == 1
    assert stats.balanced and stats.delivered == n
    if kind == "jsonl":
        steps = [e.step for e in read_jsonl(path)]  # type: ignore[union-attr]
    else:
        with open(path, newline="", encoding="utf-8") as f:
            steps = [int(row["step"]) for row in csv.DictReader(f)]
    assert sorted(steps) == list(range(n))  # every event, none twice


TRAINER = """
import os, sys, time
from producers import MetricLogger
from sinks import CsvSink, JsonlSink
out = sys.argv[1]
log = MetricLogger(sinks=[JsonlSink(out + "/m.jsonl"), CsvSink(out + "/m.csv")])
log.flush()
print("ready", flush=True)
step = 0
while True:
    x = 0
    for i in range(3_000):  # ~1 ms of Python that holds the GIL
        x += i
    log.scalar("loss", float(step), step=step)
    step += 1
    with open(out + "/count.tmp", "w") as f:
        f.write(f"{step} {time.time()}")
    os.replace(out + "/count.tmp", out + "/count")  # whole, even if the kill comes mid-write
"""


def test_kill_9_of_the_trainer_loses_at_most_one_poll_and_the_host_writes_the_rest(tmp_path: Path) -> None:
    script = tmp_path / "trainer.py"
    script.write_text(textwrap.dedent(TRAINER))
    child = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        host = [p.pid for p in psutil.Process(child.pid).children()]
        wait_until_sync(lambda: _logged(tmp_path)[0] > 3_000)
    finally:
        child.kill()
        child.wait(10)
    logged, last_logged = _logged(tmp_path)
    wait_until_sync(lambda: all(gone(pid) for pid in host), timeout=30)  # it wrote what it had, then left
    events = read_jsonl(tmp_path / "m.jsonl")
    assert [e.step for e in events] == list(range(len(events)))  # type: ignore[union-attr]  # in order, once
    lost = last_logged - events[-1].wall_time  # the time span of what the kill took with it
    # At most one poll_interval (20 ms: what the trainer had not shipped) and the step in progress.
    # A step is ~1 ms on a quiet machine; on a busy one the loop is descheduled for longer, and the
    # step in progress is as long as the longest gap between steps just before the kill.
    times = [e.wall_time for e in events[-500:]]
    step = max((b - a for a, b in itertools.pairwise(times)), default=0.0)
    assert lost <= 0.020 + 2 * step + 0.005, (
        f"{logged - len(events)} of {logged} lost: the last {lost * 1000:.0f} ms (steps up to {step * 1000:.0f} ms)"
    )
    with open(tmp_path / "m.csv") as f:
        assert sum(1 for _ in f) - 1 == len(events)


def _logged(out: Path) -> tuple[int, float]:
    """How many steps the trainer logged, and the time it logged the last one."""
    try:
        count, at = (out / "count").read_text().split()
    except (FileNotFoundError, ValueError):  # not yet, or caught mid-write
        return 0, 0.0
    return int(count), float(at)


CTRL_C = """
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
    print(next(iter(log.stats().values())).where, flush=True)
    while True:
        time.sleep(0.01)
"""


def test_ctrl_c_to_the_process_group_drains_through_the_host_and_leaves_no_process(tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(CTRL_C))
    child = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "e.jsonl")],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        start_new_session=True,  # its own process group, like a job in a terminal
    )
    assert child.stdout is not None
    try:
        host = host_pid(child.stdout.readline())
        os.killpg(child.pid, signal.SIGINT)  # what Ctrl-C does: every process in the group
        child.wait(30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)  # a failed test leaves nothing running
    assert [e.step for e in read_jsonl(tmp_path / "e.jsonl")] == list(range(3_000))  # type: ignore[union-attr]
    wait_until_sync(lambda: gone(host))
