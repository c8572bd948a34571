"""Delivery while the loop runs, with the loops users write: one that holds the GIL and prints,
one fed by a DataLoader with worker processes, one that logs tensors.

Each runs as a real script in a real process; the test reads the files as a user would.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from sinks import iter_jsonl
from tests.delivery_loops import DATALOADER_LOOP, PRINTING_LOOP

ROOT = Path(__file__).resolve().parents[1]


def _last_wall_time(path: Path) -> float | None:
    last = None
    if path.exists():
        for event in iter_jsonl(path):
            last = event.wall_time
    return last


def test_a_loop_that_holds_the_gil_and_prints_is_never_more_than_2s_behind_on_disk(tmp_path: Path) -> None:
    script = tmp_path / "loop.py"
    script.write_text(textwrap.dedent(PRINTING_LOOP))
    child = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path), "6"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert child.stdout is not None
    start = float(child.stdout.readline().split()[1])
    lags: list[float] = []
    while child.poll() is None:
        time.sleep(0.25)  # a sample every quarter second of how far the file is behind the loop
        now = time.time()
        last = _last_wall_time(tmp_path / "m.jsonl")
        lags.append(now - (last if last is not None else start))
    assert child.wait(30) == 0
    assert len(lags) >= 12
    assert max(lags) <= 2.0, f"the file fell {max(lags):.1f} s behind the loop (samples: {[round(x, 2) for x in lags]})"


@pytest.mark.parametrize("workers", ["per-epoch", "persistent"])
def test_a_loop_fed_by_dataloader_workers_closes_within_a_second(
    tmp_path: Path, workers: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = tmp_path / "loop.py"
    script.write_text(textwrap.dedent(DATALOADER_LOOP))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path), workers], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, steps, seconds = proc.stdout.split()
    # the goal, ~1 s (W&B's finish is most of it), is measured by benchmarks/bench_delivery.py; here,
    # on a loaded CI machine, what must never come back: close() waiting out the shutdown timeout
    assert float(seconds) < 5.0, f"close() took {float(seconds):.1f} s\n{proc.stderr[-2000:]}"
    assert "did not" not in proc.stderr and "failed" not in proc.stderr, proc.stderr[-2000:]
    assert [e.step for e in iter_jsonl(tmp_path / "m.jsonl")] == list(range(int(steps)))  # type: ignore[union-attr]


class _Recorder:
    """Records every tensor method that reads a value back to the host, and on which thread."""

    READS = ("item", "tolist", "cpu", "__float__", "numpy")

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []


def test_tensors_are_logged_without_being_read_on_the_training_thread(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from torch.overrides import TorchFunctionMode

    from producers import MetricLogger
    from sinks import MemorySink

    reads: list[tuple[str, str]] = []
    training = threading.current_thread().name

    class Watch(TorchFunctionMode):
        def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            name = getattr(func, "__name__", str(func))
            if name in _Recorder.READS:
                reads.append((name, threading.current_thread().name))
            return func(*args, **(kwargs or {}))

    values = [torch.tensor(0.1 * i) for i in range(200)]
    sink = MemorySink()
    with Watch(), MetricLogger(sinks=[sink]) as log:
        for step, value in enumerate(values):
            log.scalar("loss", value * 2, step=step)
            log.scalars({"a": value, "b": torch.tensor([step], dtype=torch.int64)}, step=step)
        log.flush()
        assert not [r for r in reads if r[1] == training], f"read on the training thread: {reads[:5]}"
    assert sink.values("loss") == [(s, (v * 2).item()) for s, v in enumerate(values)]
    assert sink.values("a") == [(s, v.item()) for s, v in enumerate(values)]
    assert sink.values("b") == [(s, float(s)) for s in range(200)]
