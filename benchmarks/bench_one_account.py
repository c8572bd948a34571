"""One account of every event: the delivery path's failure cases, measured on disk.

Each case runs a real training script (a MetricLogger with CSV, or CSV + JSONL) in its own
interpreter, breaks its sink host the way the field does, and counts what is on disk: rows in the
CSV file plus events saved for `metricbus replay`, against steps logged.

1. a host killed 6 times within a minute (given up on), then 100,000 more values: steps/s of the
   loop and the trainer's CPU before and after (a spinning thread would show), close() time;
2. a host frozen (SIGSTOP) until close(), shutdown_timeout=10: close() time, written + saved;
3. a host frozen while the loop logs 2,000,000 values flat out (default 'block' policy,
   pending_limit 100,000, block_timeout 1 s), then continued: the trainer's peak RSS growth,
   dropped, and rows on disk;
4. a configuration mistake (a CSV path under a regular file) and a second process on the same
   CSV file: milliseconds until InvalidConfig.

    python benchmarks/bench_one_account.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import write_result  # noqa: E402

PRELUDE = """
import csv, os, re, resource, signal, sys, time
from bus import DeliveryError, SinkState, read_spool
from producers import MetricLogger
from sinks import CsvSink
out = sys.argv[1]
def host_pid(log):
    return int(re.search(r"pid (\\d+)", log.stats()[log.sink_names[0]].where).group(1))
def on_disk(error):
    with open(out + "/m.csv", newline="") as f:
        written = {int(r["step"]) for r in csv.DictReader(f)}
    saved = set()
    if error is not None:
        folder = error.stats[error_name(error)].saved_to
        saved = {e.step for e in read_spool(folder)} if folder else set()
    return written, saved
def error_name(error):
    return next(iter(error.stats))
def timed_close(log):  # seconds close() took, and the DeliveryError it raised (None: all delivered)
    t = time.perf_counter()
    try:
        log.close()
    except DeliveryError as exc:
        return time.perf_counter() - t, exc
    return time.perf_counter() - t, None
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
"""

GIVEN_UP = """
log = MetricLogger(sinks=[CsvSink(out + "/m.csv")], shutdown_timeout=5.0)
name = log.sink_names[0]
step = 0
def run(n):
    global step
    t, c = time.perf_counter(), cpu()
    for _ in range(n):
        log.scalar("x", float(step), step)
        step += 1
        if step % 10 == 0:
            time.sleep(0.0005)
    return n / (time.perf_counter() - t), (cpu() - c) / n * 1e6
before = run(100_000)
for _ in range(6):
    log.flush(60)
    pid = host_pid(log)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and log.stats()[name].state is not SinkState.FAILED and host_pid(log) == pid:
        time.sleep(0.01)
after = run(100_000)
close, error = timed_close(log)
written, saved = on_disk(error)
print({"steps_per_s_before": before[0], "steps_per_s_after": after[0], "trainer_cpu_us_per_value_before": before[1],
       "trainer_cpu_us_per_value_after": after[1], "close_s": close, "logged": step, "written": len(written),
       "saved": len(saved), "accounted": len(written | saved)})
"""

FROZEN_AT_CLOSE = """
log = MetricLogger(sinks=[CsvSink(out + "/m.csv")], shutdown_timeout=10.0)
for i in range(100_000):
    log.scalar("x", float(i), i)
log.flush(60)
pid = host_pid(log)
os.kill(pid, signal.SIGSTOP)
for i in range(100_000, 145_000):
    log.scalar("x", float(i), i)
close, error = timed_close(log)
written, saved = on_disk(error)
print({"shutdown_timeout": 10.0, "close_s": close, "logged": 145_000, "written": len(written), "saved": len(saved),
       "accounted": len(written | saved), "written_and_saved": len(written & saved)})
"""

FROZEN_FLAT_OUT = """
log = MetricLogger(sinks=[CsvSink(out + "/m.csv")], block_timeout=1.0)
log.scalar("x", 0.0, 0)
log.flush(60)
pid = host_pid(log)
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
os.kill(pid, signal.SIGSTOP)
n = 2_000_000
t = time.perf_counter()
for i in range(1, n):
    log.scalar("x", float(i), i)
logging_s = time.perf_counter() - t
rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
dropped = sum(log.stats()[log.sink_names[0]].dropped.values())
os.kill(pid, signal.SIGCONT)
log.close()
written, _ = on_disk(None)
print({"logged": n, "logging_s": logging_s, "peak_rss_growth_mib": (rss1 - rss0) / 1024, "dropped": dropped,
       "written": len(written)})
"""

MISTAKES = """
from bus import InvalidConfig
open(out + "/file", "w").close()
t = time.perf_counter()
try:
    MetricLogger(sinks=[CsvSink(out + "/file/m.csv")])
except InvalidConfig:
    mistake = time.perf_counter() - t
first = MetricLogger(sinks=[CsvSink(out + "/shared.csv")])
import subprocess
code = "import time; from producers import MetricLogger; from sinks import CsvSink; from bus import InvalidConfig\\n" \\
       "t = time.perf_counter()\\ntry:\\n    MetricLogger(sinks=[CsvSink(%r)])\\nexcept InvalidConfig as e:\\n" \\
       "    print(time.perf_counter() - t, e)" % (out + "/shared.csv")
second = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ)
first.close()
seconds, message = second.stdout.split(" ", 1)
print({"mistake_ms": mistake * 1e3, "second_process_ms": float(seconds) * 1e3, "message": message.strip()})
"""


def run(code: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as out:
        done = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(PRELUDE + code), out],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "XDG_DATA_HOME": out},
            timeout=600,
        )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    result: dict[str, Any] = eval(done.stdout.strip().splitlines()[-1])  # our own child's dict
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}


def main() -> None:
    report = {
        "host_given_up": run(GIVEN_UP),
        "host_frozen_at_close": run(FROZEN_AT_CLOSE),
        "host_frozen_flat_out": run(FROZEN_FLAT_OUT),
        "mistakes": run(MISTAKES),
    }
    write_result("one_account", as_rows(report))


def as_rows(report: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The report as the rows every benchmark writes (benchmarks/_common.py)."""
    given, frozen, flat, mistakes = (
        report[k] for k in ("host_given_up", "host_frozen_at_close", "host_frozen_flat_out", "mistakes")
    )
    return [
        {
            "what": "host given up on: events accounted (written + saved) / logged",
            "value": given["accounted"] / given["logged"],
            "unit": "share",
            **given,
        },
        {
            "what": "host frozen until close(), shutdown_timeout=10: close()",
            "value": frozen["close_s"],
            "unit": "s",
            **frozen,
        },
        {
            "what": "host frozen, 2M values flat out: trainer peak RSS growth",
            "value": flat["peak_rss_growth_mib"],
            "unit": "MiB",
            **flat,
        },
        {"what": "a CSV path under a file: InvalidConfig after", "value": mistakes["mistake_ms"], "unit": "ms"},
        {
            "what": "a second process on the same CSV: InvalidConfig after",
            "value": mistakes["second_process_ms"],
            "unit": "ms",
        },
    ]


if __name__ == "__main__":
    main()
