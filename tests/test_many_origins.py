"""Thousands of origins into one TensorBoard logdir, a CSV and a JSONL file, under the common
open-file limit of 1,024: every event is on disk, read back with each format's own reader."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from sinks import read_jsonl
from tests.many_origins_child import STEPS, origin

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

    expected = {(origin(i).label, step, i + step / 10) for i in range(ORIGINS) for step in range(STEPS)}
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
