"""What the cross-rank tests share: how a rank's script is started and reaped, and what numpy says
the job's series must be (the values and reductions of `tests/ranks_child.py`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from bus import Metrics
from tests.ranks_child import REDUCE, values

TORCHRUN = Path(sys.executable).with_name("torchrun")
NAMES = [f"v{i}" for i in range(10)]
NUMPY = {"mean": np.mean, "sum": np.sum, "min": np.min, "max": np.max}


def reap(children: list[subprocess.Popen[bytes]]) -> None:
    """End (by pid) every child a test started that is still running."""
    while children:
        proc = children.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def go(procs: list[subprocess.Popen[bytes]]) -> None:
    """Start every rank at once, when all are ready (a loaded machine starts them far apart)."""
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == b"ready"
    for p in procs:
        assert p.stdin is not None
        p.stdin.write(b"go\n")
    for p in procs:
        assert p.stdin is not None
        p.stdin.close()


def rank_rows(events: list[Any]) -> dict[tuple[int, int], dict[str, float]]:
    """Each rank's own series by (rank, step)."""
    return {(e.origin.rank, e.step): e.values for e in events if isinstance(e, Metrics) and e.origin.rank is not None}


def want(ranks: list[int], step: int) -> dict[str, float]:
    """numpy's reduction over `ranks` of each value at `step`, by the job's REDUCE."""
    table = np.array([values(r, step) for r in ranks])
    return {name: float(NUMPY[REDUCE[name]](table[:, i])) for i, name in enumerate(NAMES)}
