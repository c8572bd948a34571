"""Shutdown in a real process: clean exit, SIGTERM, Ctrl-C and kill -9."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

from sinks import read_jsonl
from tests.helpers import wait_until_sync

ROOT = Path(__file__).resolve().parents[1]

# A shell starts background jobs with SIGINT ignored, and children inherit that; a terminal's
# Ctrl-C means the default handler, so the child restores it.
CHILD = """
import signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)
from producers import MetricLogger
from sinks import CsvSink, JsonlSink
out, n, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
log = MetricLogger()
log.add_sink(JsonlSink(out + "/m.jsonl"), max_interval={interval})
log.add_sink(CsvSink(out + "/m.csv"), max_interval={interval})
with log:
    step = 0
    while mode == "forever" or step < n:
        log.scalars({{"loss": 1.0 / (step + 1), "acc": step / 1e6}}, step=step)
        step += 1
        if step == n:
            print("ready", flush=True)
        if mode in ("wait", "forever") and step >= n:
            time.sleep(0.001)
"""


def _spawn(tmp_path: Path, n: int, mode: str, interval: float = 3600.0) -> subprocess.Popen[str]:
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(CHILD.format(interval=interval)))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, str(script), str(tmp_path), str(n), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_clean_exit_writes_everything(tmp_path: Path) -> None:
    child = _spawn(tmp_path, 5_000, "once")
    assert child.wait(60) == 0, child.stderr.read()  # type: ignore[union-attr]
    assert len(read_jsonl(tmp_path / "m.jsonl")) == 5_000
    assert len(_csv_rows(tmp_path / "m.csv")) == 10_000


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_ctrl_c_drain_every_buffer(tmp_path: Path, sig: signal.Signals) -> None:
    child = _spawn(tmp_path, 5_000, "wait")  # max_interval of an hour: only shutdown writes
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    child.send_signal(sig)
    assert child.wait(60) != 0  # it was ended by the signal, not by finishing
    events = read_jsonl(tmp_path / "m.jsonl")
    assert [e.step for e in events][:5_000] == list(range(5_000))  # type: ignore[union-attr]
    rows = _csv_rows(tmp_path / "m.csv")
    assert len(rows) >= 10_000 and rows[9_999]["step"] == "4999"


def test_kill_9_leaves_files_that_parse_with_at_most_one_torn_line(tmp_path: Path) -> None:
    child = _spawn(tmp_path, 2_000, "forever", interval=0.01)
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    jsonl, csv_file = tmp_path / "m.jsonl", tmp_path / "m.csv"
    wait_until_sync(lambda: all(f.exists() and f.stat().st_size > 100_000 for f in (jsonl, csv_file)))
    hosts = psutil.Process(child.pid).children()  # the sink host outlives the trainer and writes what it got
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    _, alive = psutil.wait_procs(hosts, timeout=30)  # read the files once nothing writes them any more
    assert not alive, f"sink hosts still running 30 s after the trainer died: {alive}"

    lines = jsonl.read_bytes().split(b"\n")
    whole, last = lines[:-1], lines[-1]
    parsed = [json.loads(line) for line in whole]  # every complete line parses
    assert [p["step"] for p in parsed] == list(range(len(parsed)))
    if last:  # a torn tail is allowed, and read_jsonl skips it
        assert len(read_jsonl(jsonl)) == len(parsed)

    text = (tmp_path / "m.csv").read_text()
    rows = list(csv.reader(text.splitlines(keepends=True)))
    complete = rows[1:-1] if not text.endswith("\n") else rows[1:]
    for row in complete:
        assert len(row) == 8
        float(row[4])
