"""Reliability trials: events on disk vs events logged, for every way a training script ends.

Runs the child of tests/test_exit_paths.py (a MetricLogger with CSV + JSONL + TensorBoard sinks,
no `with`, no close()) through each exit path once and counts what is on disk with csv.reader,
read_jsonl and TensorBoard's EventAccumulator; for hung sinks, how long the process took to exit
after it stopped logging. The Reliability page (docs/reliability.md) quotes this script's output.
"""

from __future__ import annotations

import json
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import write_result
from tests.test_exit_paths import Child, files_parse, on_disk


def fewest(found: dict[str, list[int]]) -> int:
    """The shortest gap-free series from step 0 across every file (what is surely on disk)."""
    counts = []
    for steps in found.values():
        n = 0
        while n < len(steps) and steps[n] == n:
            n += 1
        counts.append(n)
    return min(counts)


def scripted(mode: str, out: Path, n: int = 20_000) -> dict[str, object]:
    child = Child(mode, out, ("--n", str(n)))
    code = child.finish(60)
    return {"trial": f"script ends by {mode}, no close()", "logged": n, "on_disk": fewest(on_disk(out)), "exit": code}


def signalled(sig: signal.Signals, target: str, out: Path) -> dict[str, object]:
    child = Child("loop", out, ("--n", "5000"))
    child.line("ready")
    child.signal(sig, target)
    code = child.finish(60)
    logged = int((out / "count").read_text())
    name = f"{sig.name} to the {'process group' if target == 'group' else 'pid'} mid-run"
    return {"trial": name, "logged": logged, "on_disk": fewest(on_disk(out)), "exit": code}


def sigterm_then_sigkill(out: Path, grace: float = 2.0) -> dict[str, object]:
    """A trainer that catches SIGTERM and keeps logging until SLURM's SIGKILL."""
    options = ("--n", "5000", "--interval", "0.2", "--max-batch", "10000", "--trainer-sigterm")
    child = Child("loop", out, options)
    child.line("ready")
    child.signal(signal.SIGTERM, "group")
    if not child.exited_within(grace):
        child.signal(signal.SIGKILL, "group")
        child.finish(30)
    killed_at = time.monotonic()
    progress = child.progress()
    logged, last_t = progress[-1]
    rate = logged / max(1e-9, last_t - progress[0][1])
    missing = logged - fewest(on_disk(out))
    return {
        "trial": f"SIGTERM, SIGKILL {grace:.0f} s later (max_interval 0.2 s)",
        "logged": logged,
        "on_disk": logged - missing,
        "missing_s": round(missing / rate, 3),
        "parse_problems": files_parse(out),
        "killed_after_s": round(killed_at - last_t, 3),
    }


def hung(mode: str, hang: str, out: Path, shutdown_timeout: float = 2.0) -> dict[str, object]:
    child = Child(mode, out, ("--n", "5000", "--shutdown-timeout", str(shutdown_timeout), "--hang", hang))
    done, _ = child.line("done logging")
    child.finish(60)
    exited = time.monotonic() - done
    stats = json.loads(child.line("stats")[1]) if any(t.startswith("stats") for _, t in child.lines) else {}
    return {
        "trial": f"sink hung in {hang} ({'MetricLogger' if mode == 'hung_logger' else 'async MetricBus'})",
        "exit_after_s": round(exited, 2),
        "shutdown_timeout_s": shutdown_timeout,
        "hung_sink_state": stats.get("state"),
        "healthy_jsonl": fewest({"jsonl": on_disk(out)["jsonl"]}),
    }


def main() -> None:
    rows: list[dict[str, object]] = []
    trials = [
        *(lambda out, m=m: scripted(m, out) for m in ("fall_off", "sys_exit", "raise")),
        lambda out: signalled(signal.SIGTERM, "pid", out),
        lambda out: signalled(signal.SIGINT, "pid", out),
        lambda out: signalled(signal.SIGINT, "group", out),
        sigterm_then_sigkill,
        *(
            lambda out, h=h: hung("hung_logger", h, out)
            for h in (
                "write_batch:thread",
                "write_batch:executor",
                "write_batch:blocking",
                "open:thread",
                "flush:thread",
                "close:thread",
            )
        ),
        lambda out: hung("hung_async", "write_batch:executor", out),
    ]
    for trial in trials:
        with tempfile.TemporaryDirectory() as tmp:
            row = trial(Path(tmp))
        rows.append(row)
        print(json.dumps(row), flush=True)
    table = []
    for row in rows:
        what = row.pop("trial")
        if "on_disk" in row:
            table.append({"what": what, "value": row.pop("on_disk"), "unit": "events on disk", **row})
        else:
            table.append({"what": what, "value": row.pop("exit_after_s"), "unit": "s to exit", **row})
    write_result("reliability", table)


if __name__ == "__main__":
    main()
