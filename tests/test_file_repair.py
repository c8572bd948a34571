"""CSV and JSONL sinks whose writes fail midway (a file size limit: the kernel writes part of the
bytes, then refuses): a retried batch lands once and whole, and a sink that gives up leaves only
whole records. The limit is process-wide, so each case runs in a child process."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sinks import read_jsonl

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import os, resource, signal, sys
import anyio
from bus import MetricBus, Metrics, RetryPolicy
from sinks import CsvSink, JsonlSink

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the size limit then fails with EFBIG
out, recovers = sys.argv[1], sys.argv[2] == "recovers"
paths = [out + "/long.csv", out + "/wide.csv", out + "/e.jsonl"]
sinks = [CsvSink(paths[0]), CsvSink(paths[1], layout="wide"), JsonlSink(paths[2])]


async def lift_after_every_sink_failed(bus, limit):
    with anyio.fail_after(30):
        while not all(s.failed_attempts for s in bus.stats().values()):
            await anyio.sleep(0.001)
    resource.setrlimit(resource.RLIMIT_FSIZE, limit)


async def main():
    retry = RetryPolicy(max_attempts=10 if recovers else 2, backoff=0.05)
    async with MetricBus(raise_on_loss=False) as bus:
        for sink in sinks:
            bus.add_sink(sink, retry=retry)
        await bus.publish(Metrics({"loss": 0.0, "acc": 0.0}, step=0))
        await bus.flush()
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)
        # every file may grow by 100 bytes more: the next batch's write stops midway
        resource.setrlimit(resource.RLIMIT_FSIZE, (max(map(os.path.getsize, paths)) + 100, limit[1]))
        await bus.publish_many([Metrics({"loss": s / 10, "acc": s / 20}, step=s) for s in range(1, 200)])
        async with anyio.create_task_group() as tg:
            if recovers:
                tg.start_soon(lift_after_every_sink_failed, bus, limit)
            await bus.flush()
    assert all(s.failed_attempts for s in bus.stats().values()), bus.stats()


anyio.run(main)
"""


def _run_child(tmp_path: Path, mode: str) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    child = subprocess.run(
        [sys.executable, str(script), str(tmp_path), mode],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert child.returncode == 0, child.stderr


def _csv_steps(path: Path, width: int) -> list[int]:
    """The steps of a CSV's rows, checking that every row is whole (the file ends after one)."""
    assert path.read_bytes().endswith(b"\r\n")
    with open(path, newline="", encoding="utf-8") as f:
        table = list(csv.reader(f))
    assert all(len(row) == width for row in table)
    return [int(row[2]) for row in table[1:]]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_FSIZE and SIGXFSZ as on Linux")
@pytest.mark.parametrize("mode", ["recovers", "gives_up"])
def test_a_write_that_fails_midway_leaves_no_partial_record(tmp_path: Path, mode: str) -> None:
    _run_child(tmp_path, mode)
    long_steps = _csv_steps(tmp_path / "long.csv", 8)
    wide_steps = _csv_steps(tmp_path / "wide.csv", 5)
    assert (tmp_path / "e.jsonl").read_bytes().endswith(b"\n")
    jsonl_steps = [e.step for e in read_jsonl(tmp_path / "e.jsonl")]
    if mode == "recovers":  # each retried batch landed once
        assert long_steps == [s for s in range(200) for _ in ("loss", "acc")]
        assert wide_steps == jsonl_steps == list(range(200))
    else:  # whatever did land is whole, in order, and there once
        assert long_steps[:2] == [0, 0] and long_steps == sorted(long_steps)
        assert len(set(long_steps)) * 2 == len(long_steps)
        for steps in (wide_steps, jsonl_steps):
            assert steps[0] == 0 and steps == sorted(set(steps))
