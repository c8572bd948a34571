"""Delivery while the loop runs, with the loops users write (CSV + JSONL + TensorBoard, defaults).

1. Lag: a loop whose ~1 ms steps hold the GIL (Python work) and print one line to stderr, for
   SECONDS s; every 0.25 s, how far the JSONL file on disk is behind the loop (now minus the wall
   time of the newest event in it). Reports the first value's delay and the worst lag.
2. kill -9 of the trainer after 5 s of ~1 ms steps (one kind that holds the GIL, one that
   sleeps): the last step logged vs the newest event on disk once the sink host (if any) has
   finished, in milliseconds of training lost.
3. close() of a loop fed by a DataLoader with 2 forked worker processes, 3 epochs, per-epoch and
   persistent workers, CSV + JSONL + TensorBoard + W&B (offline): seconds, and whether stderr
   reports a failure.

Each trial is a real script in a fresh process. `--repo PATH` runs the trials against another
checkout (to measure a previous commit the same way).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import msgspec

from benchmarks._common import write_result
from sinks import iter_jsonl
from tests.delivery_loops import DATALOADER_LOOP, PRINTING_LOOP

SECONDS = 20.0


KILLED_LOOP = """
import os, sys, time
from producers import MetricLogger
from sinks import CsvSink, JsonlSink, TensorBoardSink
out, kind = sys.argv[1], sys.argv[2]
log = MetricLogger(sinks=[CsvSink(out + "/m.csv"), JsonlSink(out + "/m.jsonl"), TensorBoardSink(out + "/tb")])
print("ready", flush=True)
step = 0
while True:
    if kind == "hold":
        x = 0
        for i in range(3_000):
            x += i
    else:
        time.sleep(0.001)
    log.scalar("loss", float(step), step=step)
    step += 1
    with open(out + "/count.tmp", "w") as f:
        f.write(f"{step} {time.time()}")
    os.replace(out + "/count.tmp", out + "/count")  # whole, even if the kill comes mid-write
"""


def _script(tmp: Path, text: str) -> Path:
    path = tmp / "script.py"
    path.write_text(textwrap.dedent(text))
    return path


def _newest(path: Path) -> float | None:
    """The wall time of the last whole line of a JSONL file, reading only its tail (parsing the
    whole file every quarter second would take the CPU the sinks need)."""
    if not path.exists():
        return None
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - 65_536))
        lines = f.read().split(b"\n")
    for line in reversed(lines[1:-1] if len(lines) > 2 else lines[:-1]):
        with contextlib.suppress(msgspec.DecodeError):
            return float(msgspec.json.decode(line)["wall_time"])
    return None


def lag(repo: Path) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        child = subprocess.Popen(
            [sys.executable, str(_script(tmp, PRINTING_LOOP)), d, str(SECONDS)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "PYTHONPATH": str(repo)},
            cwd=d,
        )
        assert child.stdout is not None
        start = float(child.stdout.readline().split()[1])
        lags, first = [], None
        while child.poll() is None:
            time.sleep(0.25)
            now, newest = time.time(), _newest(tmp / "m.jsonl")
            if newest is not None and first is None:
                first = now - start
            lags.append(now - (newest if newest is not None else start))
        child.wait()
        return {"worst_lag_s": max(lags), "first_on_disk_s": first if first is not None else float("inf")}


def killed(repo: Path, kind: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        child = subprocess.Popen(
            [sys.executable, str(_script(tmp, KILLED_LOOP)), d, kind],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(repo)},
            cwd=d,
            start_new_session=True,
        )
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        time.sleep(5.0)  # five seconds of training, then the OOM killer
        child.kill()
        child.wait()
        logged, last = (tmp / "count").read_text().split()
        time.sleep(3.0)  # a sink host still writing what it received finishes
        newest = _newest(tmp / "m.jsonl")
        on_disk = sum(1 for _ in iter_jsonl(tmp / "m.jsonl")) if (tmp / "m.jsonl").exists() else 0
        subprocess.run(["pkill", "-9", "-s", str(child.pid)], check=False)  # nothing left behind
        lost = float(last) - newest if newest is not None else 5.0
        return {"lost_ms": 1000 * lost, "logged": int(logged), "on_disk": on_disk}


def loader(repo: Path, workers: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as d:
        env = {**os.environ, "PYTHONPATH": str(repo), "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
        proc = subprocess.run(
            [sys.executable, str(_script(Path(d), DATALOADER_LOOP)), d, workers],
            capture_output=True,
            text=True,
            env=env,
            cwd=d,
            timeout=300,
        )
        seconds = float(proc.stdout.split()[-1]) if "closed" in proc.stdout else float("inf")
        complained = "did not" in proc.stderr or "failed" in proc.stderr
        return {"close_s": seconds, "complained": float(complained)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1])
    args = parser.parse_args()
    repo = args.repo.resolve()
    rows = []
    result = lag(repo)
    rows.append(
        {
            "what": "GIL-holding printing loop: worst lag on disk",
            "value": result["worst_lag_s"],
            "unit": "s",
            "first_on_disk_s": result["first_on_disk_s"],
            "seconds": SECONDS,
        }
    )
    for kind in ("hold", "sleep"):
        trials = [killed(repo, kind) for _ in range(3)]
        rows.append(
            {
                "what": f"kill -9 after 5 s, step {'holds the GIL' if kind == 'hold' else 'sleeps 1 ms'}: lost",
                "value": statistics.median(t["lost_ms"] for t in trials),
                "unit": "ms",
                "trials_ms": [round(t["lost_ms"], 1) for t in trials],
            }
        )
    for workers in ("per-epoch", "persistent"):
        result = loader(repo, workers)
        rows.append(
            {
                "what": f"DataLoader workers ({workers}), 4 sinks: close()",
                "value": result["close_s"],
                "unit": "s",
                "reported_failure": bool(result["complained"]),
            }
        )
    write_result("delivery" if repo == Path(__file__).resolve().parents[1] else "delivery_baseline", rows)


if __name__ == "__main__":
    main()
