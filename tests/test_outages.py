"""An outage is not a loss: a sink that is down is only behind.

A disk that is full for a while (an error raised for a few seconds, and a real full filesystem
made with RLIMIT_FSIZE), and a service that never comes back: counted on disk, in order, with the
loop never waiting, and what could not be delivered saved where the user will look.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bus import DeliveryError, SinkState, read_spool
from producers import MetricLogger
from sinks import read_jsonl
from tests.isolated_sinks import OutageJsonlSink, UnreachableSink

ROOT = Path(__file__).resolve().parents[1]


def test_a_disk_full_for_a_while_loses_nothing_and_the_loop_never_waits(tmp_path: Path) -> None:
    """ENOSPC for the first 2 s of a 4 s run, default options: every event in the file, in
    publish order, none twice; no logging call waits for the sink."""
    path = tmp_path / "m.jsonl"
    sink = OutageJsonlSink(path, until=time.time() + 2.0)
    slowest, step = 0.0, 0
    saw_down = False
    with MetricLogger(sinks=[sink]) as log:
        end = time.monotonic() + 4.0
        while time.monotonic() < end:
            started = time.perf_counter()
            log.scalars({"loss": 1.0 / (step + 1), "lr": 0.1}, step=step)
            slowest = max(slowest, time.perf_counter() - started)
            step += 1
            time.sleep(0.0005)  # the step's own work
            if step % 500 == 0:
                saw_down = saw_down or log.stats()[sink.name].state is SinkState.DOWN
        log.flush()
        stats = log.stats()[sink.name]
    assert saw_down, "the sink was never seen down: the outage did not happen"
    assert [e.step for e in read_jsonl(path)] == list(range(step))  # type: ignore[union-attr]
    assert stats.delivered == step and stats.dropped == {} and stats.balanced
    assert slowest < 0.05, f"a logging call waited {slowest * 1000:.0f} ms"


FULL_DISK = """
import resource, signal, sys, time
from pathlib import Path
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
limit = 256 * 1024
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))  # the sink host inherits it
from bus import SinkState
from producers import MetricLogger
from sinks import CsvSink
out = Path(sys.argv[1])
sink = CsvSink(out / "m.csv")
log = MetricLogger(sinks=[sink])
for step in range(20_000):
    log.scalars({"loss": 1.0 / (step + 1), "acc": step / 20_000}, step=step)
    if step == 10_000:
        deadline = time.monotonic() + 30
        while log.stats()[sink.name].state is not SinkState.DOWN:  # the disk filled up
            assert time.monotonic() < deadline, log.stats()
            time.sleep(0.01)
        host = int(log.stats()[sink.name].where.rsplit("pid ", 1)[1].rstrip(")"))
        print("full at", (out / "m.csv").stat().st_size, flush=True)
        for pid in (host, 0):  # the disk is freed
            resource.prlimit(pid or __import__("os").getpid(), resource.RLIMIT_FSIZE,
                             (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
log.close()
print("closed", flush=True)
"""


def test_a_real_full_disk_is_an_outage_without_holes(tmp_path: Path) -> None:
    """A CSV file on a filesystem that is full (RLIMIT_FSIZE: writes fail with EFBIG), freed half
    way: writing resumes in order, and no row is missing or written twice."""
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(FULL_DISK))
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "full at" in proc.stdout and "closed" in proc.stdout
    with open(tmp_path / "m.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for name in ("loss", "acc"):
        assert [int(r["step"]) for r in rows if r["name"] == name] == list(range(20_000)), name


def test_a_sink_down_for_good_saves_every_missed_event_beside_its_output_for_replay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """100,000 events to a service that never answers: DeliveryError says how many were saved
    and how to replay them; they are beside the sink's output, not in the current directory;
    `metricbus replay` restores every one."""
    home, workdir = tmp_path / "out", tmp_path / "work"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    sink = UnreachableSink(home)
    log = MetricLogger(sinks=[sink], shutdown_timeout=5.0)
    for step in range(100_000):
        log.scalar("loss", 1.0 / (step + 1), step=step)
    with pytest.raises(DeliveryError) as info:
        log.close()
    stats = info.value.stats[sink.name]
    spool = home / "metricbus-spool" / sink.name
    assert stats.state is SinkState.FAILED and stats.dropped == {"sink_down": 100_000} and stats.saved == 100_000
    assert f"100,000 of the 100,000 events it missed are saved in {spool}" in str(info.value)
    assert f"metricbus replay {spool} --to" in str(info.value)
    assert not list(workdir.iterdir())  # nothing in the current directory
    assert [e.step for e in read_spool(spool)] == list(range(100_000))  # type: ignore[union-attr]

    restored = tmp_path / "restored.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "producers._cli", "replay", str(spool), "--to", f"jsonl:{restored}"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [e.step for e in read_jsonl(restored)] == list(range(100_000))  # type: ignore[union-attr]
