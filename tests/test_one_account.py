"""Every event ends delivered, dropped by the user's policy, or saved with its replay command:
the cases where the delivery path used to lose events without a count, tried the way they fail.

Real sink host processes, real signals (SIGKILL, SIGSTOP, SIGTERM), real files; what is counted is
what is on disk (the CSV file, the saved spool segments), not what the stats claim.
"""

from __future__ import annotations

import contextlib
import csv
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bus import DeliveryError, InvalidConfig, SinkState, read_spool
from producers import MetricLogger
from sinks import CsvSink, JsonlSink, MLflowSink, WandbSink, read_jsonl
from tests.helpers import wait_until_sync
from tests.isolated_sinks import UnreachableSink

ROOT = Path(__file__).resolve().parents[1]


def host_pid(log: MetricLogger, name: str) -> int:
    match = re.search(r"pid (\d+)", log.stats()[name].where)
    assert match, log.stats()[name].where
    return int(match.group(1))


def csv_steps(path: Path) -> list[int]:
    with open(path, newline="") as f:
        return [int(row["step"]) for row in csv.DictReader(f)]


def saved_steps(error: DeliveryError, name: str) -> list[int]:
    folder = error.stats[name].saved_to
    assert folder is not None, error.stats[name]
    return [e.step for e in read_spool(folder)]  # type: ignore[union-attr]


@pytest.fixture
def stopped() -> Iterator[list[int]]:
    """Pids this test stopped with SIGSTOP: continued (or already gone) whatever happens."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


# ---- many threads ----


@pytest.mark.parametrize("threads", [2, 4])
def test_many_threads_logging_at_once_lose_nothing(tmp_path: Path, threads: int) -> None:
    n = 40_000
    log = MetricLogger(sinks=[CsvSink(tmp_path / "m.csv"), JsonlSink(tmp_path / "m.jsonl")])

    def loop(t: int) -> None:
        for i in range(n):
            log.scalar(f"t{t}", float(i), step=i)

    workers = [threading.Thread(target=loop, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    log.close()  # raises DeliveryError if anything was dropped
    assert all(s.dropped == {} and s.delivered == threads * n for s in log.stats().values())
    rows = csv_steps(tmp_path / "m.csv")
    assert len(rows) == threads * n
    events = read_jsonl(tmp_path / "m.jsonl")
    for t in range(threads):
        assert [e.step for e in events if e.name == f"t{t}"] == list(range(n))  # type: ignore[union-attr]


# ---- a host that dies, dies again, and is given up on ----


def test_a_host_killed_until_given_up_saves_everything_after(tmp_path: Path) -> None:
    log = MetricLogger(sinks=[CsvSink(tmp_path / "m.csv")], shutdown_timeout=5.0)
    name = log.sink_names[0]
    step = 0
    for _ in range(6):  # the sixth death within a minute is one too many
        for _ in range(500):
            log.scalar("x", float(step), step=step)
            step += 1
        log.flush(timeout=60)
        pid = host_pid(log, name)
        os.kill(pid, signal.SIGKILL)
        wait_until_sync(lambda pid=pid: log.stats()[name].state is SinkState.FAILED or host_pid(log, name) != pid, 30)
    wait_until_sync(lambda: log.stats()[name].state is SinkState.FAILED, 30)
    for _ in range(20_000):  # after the host is given up on: never waits, never drops
        log.scalar("x", float(step), step=step)
        step += 1
    stats = log.stats()[name]
    assert stats.balanced and stats.published == step and stats.dropped == {}
    with pytest.raises(DeliveryError, match="replay") as info:
        log.close()
    final = info.value.stats[name]
    assert final.balanced and final.published == step and final.saved == final.dropped["sink_failed"]
    on_disk = set(csv_steps(tmp_path / "m.csv")) | set(saved_steps(info.value, name))
    assert on_disk == set(range(step))  # each step written or saved (at least once)


# ---- a host frozen (SIGSTOP) ----


def test_a_frozen_host_at_close_is_killed_and_what_it_did_not_write_is_saved(
    tmp_path: Path, stopped: list[int]
) -> None:
    log = MetricLogger(sinks=[CsvSink(tmp_path / "m.csv")], shutdown_timeout=2.0)
    name = log.sink_names[0]
    for i in range(5_000):
        log.scalar("x", float(i), step=i)
    log.flush(timeout=60)
    pid = host_pid(log, name)
    os.kill(pid, signal.SIGSTOP)
    stopped.append(pid)
    for i in range(5_000, 50_000):
        log.scalar("x", float(i), step=i)
    started = time.monotonic()
    with pytest.raises(DeliveryError, match="replay") as info:
        log.close()
    assert time.monotonic() - started < 2.0 + 15  # bounded (the goal, timeout + 0.5 s, is the benchmark's)
    final = info.value.stats[name]
    assert final.balanced and final.published == 50_000
    assert final.saved == final.dropped["shutdown_timeout"] > 0
    written, saved = csv_steps(tmp_path / "m.csv"), saved_steps(info.value, name)
    assert set(written) | set(saved) == set(range(50_000))
    assert len(written) + len(saved) == 50_000  # the progress record says exactly what was written


def test_a_host_frozen_while_logging_flat_out_costs_one_wait_and_no_event(tmp_path: Path, stopped: list[int]) -> None:
    log = MetricLogger(sinks=[CsvSink(tmp_path / "m.csv")], pending_limit=2_000, block_timeout=0.5)
    name = log.sink_names[0]
    log.scalar("x", 0.0, step=0)
    log.flush(timeout=60)
    pid = host_pid(log, name)
    os.kill(pid, signal.SIGSTOP)
    stopped.append(pid)
    n = 300_000
    for i in range(1, n):  # the pipe fills, the logger waits block_timeout once, then goes on
        log.scalar("x", float(i), step=i)
    stats = log.stats()[name]
    assert stats.dropped == {} and stats.balanced and stats.published == n
    os.kill(pid, signal.SIGCONT)
    log.close()
    assert csv_steps(tmp_path / "m.csv") == list(range(n))


# ---- two processes, one file ----

WRITER = """
import sys, time
from producers import MetricLogger
from sinks import CsvSink
log = MetricLogger(sinks=[CsvSink(sys.argv[1])])
print("ready", flush=True)
for i in range(int(sys.argv[2])):
    log.scalar("x", float(i), step=i)
    if i % 100 == 0:
        time.sleep(0.001)
log.close()
"""


def test_a_second_process_on_the_same_file_is_refused_and_the_first_loses_nothing(tmp_path: Path) -> None:
    script = tmp_path / "writer.py"
    script.write_text(textwrap.dedent(WRITER))
    path = tmp_path / "m.csv"
    first = subprocess.Popen(
        [sys.executable, str(script), str(path), "100000"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert first.stdout is not None and first.stdout.readline().strip() == "ready"
        wait_until_sync(lambda: path.stat().st_size > 1_000, 30)
        with pytest.raises(InvalidConfig, match=f"process {first.pid}"):
            MetricLogger(sinks=[CsvSink(path)])
        with pytest.raises(InvalidConfig, match=f"process {first.pid}"):
            MetricLogger(sinks=[JsonlSink(tmp_path / "other.jsonl"), CsvSink(path)])
        assert first.wait(120) == 0
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert csv_steps(path) == list(range(100_000))
    with MetricLogger(sinks=[CsvSink(path)]) as log:  # free again once the first has ended
        log.scalar("x", 1.0, step=100_000)
    assert csv_steps(path)[-1] == 100_000


# ---- mistakes fail at the call; outages are waited out ----


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda tmp: CsvSink(tmp / "file.txt" / "m.csv"), id="csv-under-a-file"),
        pytest.param(lambda tmp: JsonlSink(tmp / "file.txt" / "sub" / "m.jsonl"), id="jsonl-under-a-file"),
        pytest.param(lambda tmp: CsvSink(tmp), id="csv-is-a-folder"),
        pytest.param(lambda tmp: CsvSink("/sys/metricbus-test/m.csv"), id="csv-in-sys"),
        pytest.param(lambda tmp: JsonlSink("/proc/metricbus-test.jsonl"), id="jsonl-in-proc"),
        pytest.param(lambda tmp: WandbSink(project="team/exp#1"), id="wandb-project"),
        pytest.param(lambda tmp: MLflowSink("htp:/localhost:5000"), id="mlflow-scheme"),
        pytest.param(lambda tmp: MLflowSink("http:/localhost:5000"), id="mlflow-no-host"),
    ],
)
def test_a_configuration_mistake_is_invalid_config_at_the_call(tmp_path: Path, make: object) -> None:
    (tmp_path / "file.txt").write_text("a regular file")
    with pytest.raises(InvalidConfig) as info:
        log = MetricLogger()
        try:
            log.add_sink(make(tmp_path))  # type: ignore[operator]
        finally:
            log._abort()
    assert "metricbus" not in str(info.value) or "sink" in str(info.value)


def test_saved_events_fall_back_to_the_data_dir_when_the_sink_folder_cannot_be_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    monkeypatch.setenv("XDG_DATA_HOME", str(data))
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the sink's folder would be")
    log = MetricLogger(shutdown_timeout=2.0)
    log.add_sink(UnreachableSink(blocker / "out"), name="down")
    for i in range(1_000):
        log.scalar("x", float(i), step=i)
    with pytest.raises(DeliveryError, match="replay") as info:
        log.close()
    final = info.value.stats["down"]
    assert final.saved == 1_000 and final.saved_to is not None and Path(final.saved_to).is_relative_to(data)
    assert saved_steps(info.value, "down") == list(range(1_000))


# ---- signals on a loaded machine ----

TRAINER = """
import signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)
from producers import MetricLogger
from sinks import CsvSink, JsonlSink
out, n = sys.argv[1], int(sys.argv[2])
with MetricLogger(sinks=[JsonlSink(out + "/m.jsonl"), CsvSink(out + "/m.csv")]) as log:
    for step in range(n):
        log.scalars({"loss": 1.0 / (step + 1), "acc": step / 1e6}, step=step)
    print("ready", flush=True)
    time.sleep(0.001)
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_as_the_logger_closes_on_a_busy_machine_never_skips_the_drain(
    tmp_path: Path, sig: signal.Signals
) -> None:
    script = tmp_path / "trainer.py"
    script.write_text(textwrap.dedent(TRAINER))
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    n, runs = 5_000, 6
    try:
        for run in range(runs):
            out = tmp_path / f"run{run}"
            out.mkdir()
            child = subprocess.Popen(
                [sys.executable, str(script), str(out), str(n)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
            assert child.stdout is not None and child.stdout.readline().strip() == "ready"
            child.send_signal(sig)
            child.communicate(timeout=120)
            assert [e.step for e in read_jsonl(out / "m.jsonl")] == list(range(n))  # type: ignore[union-attr]
            assert len(csv_steps(out / "m.csv")) == 2 * n
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
