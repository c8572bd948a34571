"""Outages are not losses: measured on disk (the Reliability page's rows, docs/reliability.md).

1. A JSONL sink whose disk is full (ENOSPC) for the first 6 s of a 12 s run of ~1 ms steps,
   default options: events in the file / logged, in order, the slowest logging call, and how
   long after the disk came back the file caught up.
2. A sink down for good (every write refused), 100,000 events, its output in another folder:
   events saved beside its output / missed, seconds for `close()`, and `metricbus replay` of the
   saved spool back into JSONL (events restored, seconds).
3. The sink host killed (SIGKILL) 3 times while 30,000 events are logged: events in the file,
   duplicates, restarts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import write_result
from bus import DeliveryError, SinkState, read_spool
from producers import MetricLogger
from sinks import JsonlSink, read_jsonl
from tests.isolated_sinks import OutageJsonlSink, UnreachableSink

ROOT = Path(__file__).resolve().parents[1]


def disk_full_for_a_while(tmp: Path) -> dict[str, float]:
    path = tmp / "m.jsonl"
    outage = time.time() + 6.0
    sink = OutageJsonlSink(path, until=outage)
    slowest, step, caught_up = 0.0, 0, None
    with MetricLogger(sinks=[sink]) as log:
        end = time.monotonic() + 12.0
        while time.monotonic() < end:
            started = time.perf_counter()
            log.scalars({"loss": 1.0 / (step + 1), "lr": 0.1}, step=step)
            slowest = max(slowest, time.perf_counter() - started)
            step += 1
            time.sleep(0.001)
            if caught_up is None and time.time() > outage and step % 100 == 0:
                stats = log.stats()[sink.name]
                if stats.state is SinkState.OPEN and stats.queued + stats.in_flight < 200:
                    caught_up = time.time() - outage
    steps = [e.step for e in read_jsonl(path)]
    return {
        "logged": step,
        "on_disk": len(steps),
        "in_order_once": float(steps == list(range(step))),
        "slowest_call_ms": slowest * 1000,
        "caught_up_s": caught_up if caught_up is not None else float("nan"),
    }


def down_for_good(tmp: Path) -> dict[str, float]:
    home, work = tmp / "out", tmp / "work"
    work.mkdir()
    os.chdir(work)
    sink = UnreachableSink(home)
    log = MetricLogger(sinks=[sink], shutdown_timeout=5.0)
    for step in range(100_000):
        log.scalar("loss", 1.0 / (step + 1), step=step)
    started = time.perf_counter()
    try:
        log.close()
    except DeliveryError as exc:
        stats = exc.stats[sink.name]
    close_s = time.perf_counter() - started
    spool = home / "metricbus-spool" / sink.name
    saved = sum(1 for _ in read_spool(spool))
    restored = tmp / "restored.jsonl"
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "producers._cli", "replay", str(spool), "--to", f"jsonl:{restored}"],
        check=True,
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    replay_s = time.perf_counter() - started
    return {
        "missed": stats.dropped.get("sink_down", 0),
        "saved": saved,
        "in_cwd": float(any(work.iterdir())),
        "close_s": close_s,
        "restored": len(read_jsonl(restored)),
        "replay_s": replay_s,
    }


def host_killed(tmp: Path) -> dict[str, float]:
    path = tmp / "e.jsonl"
    n, kills = 30_000, 3
    with MetricLogger(sinks=[JsonlSink(path)]) as log:
        name = log.sink_names[0]
        for step in range(n):
            log.scalar("loss", float(step), step=step)
            if step % (n // (kills + 1)) == n // (kills + 1) - 1 and step < n - n // (kills + 1):
                log.flush()  # the host (a new one after a kill) is up and has written: kill it mid-stream
                where = log.stats()[name].where
                os.kill(int(where.rsplit("pid ", 1)[1].rstrip(")")), signal.SIGKILL)
        log.flush()
        restarts = log.stats()[name].restarts
    steps = [e.step for e in read_jsonl(path)]
    return {"logged": n, "on_disk": len(set(steps)), "duplicates": len(steps) - len(set(steps)), "restarts": restarts}


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as d:
        r = disk_full_for_a_while(Path(d))
    rows.append(
        {
            "what": "JSONL, disk full (ENOSPC) 6 s of a 12 s run: on disk / logged",
            "value": r["on_disk"],
            "unit": "events",
            **r,
        }
    )
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as d:
        try:
            r = down_for_good(Path(d))
        finally:
            os.chdir(cwd)
    rows.append(
        {
            "what": "a sink down for good, 100,000 events: saved beside its output",
            "value": r["saved"],
            "unit": "events",
            **r,
        }
    )
    with tempfile.TemporaryDirectory() as d:
        r = host_killed(Path(d))
    rows.append(
        {"what": "sink host killed 3 times, 30,000 events: on disk", "value": r["on_disk"], "unit": "events", **r}
    )
    write_result("outages", rows)


if __name__ == "__main__":
    main()
