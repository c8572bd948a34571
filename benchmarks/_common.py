"""Shared helpers for the benchmarks: timing, side-by-side rows, JSON results."""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


def median_seconds(run: Callable[[], object], repeats: int = 5) -> float:
    """Median wall time of `run()` over `repeats` runs (the shared 2-core machine is noisy)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def write_result(topic: str, rows: list[dict[str, Any]]) -> Path:
    """Write rows (each a dict with at least 'what', 'value', 'unit') to results/<topic>.json and
    print them as a table."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{topic}.json"
    payload = {"topic": topic, "python": platform.python_version(), "machine": platform.machine(), "rows": rows}
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print_rows(topic, rows)
    return path


def print_rows(topic: str, rows: list[dict[str, Any]]) -> None:
    print(f"\n## {topic}")
    for row in rows:
        extra = "  ".join(f"{k}={_fmt(v)}" for k, v in row.items() if k not in ("what", "value", "unit"))
        print(f"  {row['what']:<58} {_fmt(row['value']):>14} {row['unit']:<12} {extra}")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def run_contenders(script: str, names: list[str], *args: str) -> dict[str, Any]:
    """Run each contender of `script` in its own fresh interpreter (`script --contender NAME`) and
    collect the JSON each prints last, so imports, caches and GC of one never colour another."""
    import subprocess
    import sys

    out: dict[str, Any] = {}
    for name in names:
        proc = subprocess.run(
            [sys.executable, script, "--contender", name, *args], capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            raise RuntimeError(f"contender {name} failed:\n{proc.stderr}")
        out[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def serve_contender(run: Callable[[str], Any]) -> bool:
    """When this interpreter was started as one contender (`--contender NAME`, by
    run_contenders), run it, print its result as JSON and return True."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--contender")
    args, _ = parser.parse_known_args()
    if args.contender is None:
        return False
    print(json.dumps(run(args.contender)))
    return True
