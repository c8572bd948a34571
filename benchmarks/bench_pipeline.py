"""The whole pipeline's CPU per value, every process counted, and many threads logging at once.

1. CPU: N `log.scalar` calls (10 names, a step every 10 values) through a default MetricLogger into
   CSV + JSONL + TensorBoard, closed (everything on disk); CPU time of the training process and of
   its sink hosts (`getrusage` self + children, user + system), and wall time. Baseline: the same
   values written by hand in one process, `csv.writer.writerow` per row plus one msgspec JSON line
   per value (no TensorBoard: the baseline is what the issue names). The ratio is CPU per value.
2. Threads: the same N calls split over 1, 2 and 4 threads (CSV + JSONL): wall time until closed,
   and what was dropped (must be 0).

Each contender runs in its own interpreter; rounds alternate contenders and medians are kept.

    python benchmarks/bench_pipeline.py [--values 1000000] [--rounds 3] [--repo OTHER_CHECKOUT]

`--repo` adds that checkout's metricbus (an earlier commit, say) as a contender in the same rounds.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import write_result  # noqa: E402

METRICBUS = """
import resource, sys, threading, time
from producers import MetricLogger
from sinks import CsvSink, JsonlSink, TensorBoardSink
out, n, threads, tb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "tb"
sinks = [CsvSink(out + "/m.csv"), JsonlSink(out + "/m.jsonl")] + ([TensorBoardSink(out + "/tb")] if tb else [])
names = [f"metric/{i}" for i in range(10)]
wall = time.perf_counter()
log = MetricLogger(sinks=sinks)
def loop(t, count):
    scalar = log.scalar
    for i in range(count):
        scalar(names[i % 10], i * 0.5, i // 10)
workers = [threading.Thread(target=loop, args=(t, n // threads)) for t in range(threads)]
for w in workers:
    w.start()
for w in workers:
    w.join()
log.close()
wall = time.perf_counter() - wall
me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
dropped = sum(sum(s.dropped.values()) for s in log.stats().values())
print({"wall": wall, "trainer": me.ru_utime + me.ru_stime, "hosts": kids.ru_utime + kids.ru_stime, "dropped": dropped})
"""

DIRECT = """
import csv, resource, sys, time
import msgspec
out, n = sys.argv[1], int(sys.argv[2])
names = [f"metric/{i}" for i in range(10)]
encoder = msgspec.json.Encoder()
wall = time.perf_counter()
with open(out + "/m.csv", "w", newline="") as f, open(out + "/m.jsonl", "wb") as j:
    writer = csv.writer(f)
    writer.writerow(["wall_time", "origin", "step", "name", "value"])
    for i in range(n):
        t, name, step, value = time.time(), names[i % 10], i // 10, i * 0.5
        writer.writerow([t, "", step, name, value])
        j.write(encoder.encode({"kind": "scalar", "name": name, "value": value, "step": step, "wall_time": t}) + b"\\n")
wall = time.perf_counter() - wall
me = resource.getrusage(resource.RUSAGE_SELF)
print({"wall": wall, "trainer": me.ru_utime + me.ru_stime, "hosts": 0.0, "dropped": 0})
"""


def run(code: str, *args: str, root: Path = ROOT) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as out:
        done = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code), out, *args],
            capture_output=True,
            text=True,
            cwd=root,
            env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
            check=True,
        )
    result: dict[str, float] = eval(done.stdout.strip().splitlines()[-1])  # our own child's dict
    return result


def median(rows: list[dict[str, float]], key: str) -> float:
    return statistics.median(row[key] for row in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--values", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repo", type=Path, help="another checkout to measure next to this one")
    args = parser.parse_args()
    n = args.values
    cpu: dict[str, list[dict[str, float]]] = {"metricbus": [], "metricbus_csv_jsonl": [], "direct": []}
    if args.repo is not None:
        cpu["other_checkout"] = []
    threads: dict[int, list[dict[str, float]]] = {1: [], 2: [], 4: []}
    for _ in range(args.rounds):  # interleaved: a slow minute of the machine hits every contender
        cpu["metricbus"].append(run(METRICBUS, str(n), "1", "tb"))
        cpu["metricbus_csv_jsonl"].append(run(METRICBUS, str(n), "1", "no-tb"))
        cpu["direct"].append(run(DIRECT, str(n)))
        if args.repo is not None:
            cpu["other_checkout"].append(run(METRICBUS, str(n), "1", "tb", root=args.repo.resolve()))
        for k in threads:
            threads[k].append(run(METRICBUS, str(n), str(k), "no-tb"))
    report: dict[str, Any] = {"values": n, "rounds": args.rounds, "cpu": {}, "threads": {}}
    if args.repo is not None:
        report["other_checkout"] = str(args.repo)
    base = median(cpu["direct"], "trainer") / n * 1e6
    for name, rows in cpu.items():
        total = statistics.median((r["trainer"] + r["hosts"]) for r in rows) / n * 1e6
        report["cpu"][name] = {
            "cpu_us_per_value": round(total, 3),
            "trainer_us": round(median(rows, "trainer") / n * 1e6, 3),
            "hosts_us": round(median(rows, "hosts") / n * 1e6, 3),
            "wall_s": round(median(rows, "wall"), 3),
            "ratio_to_direct": round(total / base, 2),
        }
    one = median(threads[1], "wall")
    for k, rows in threads.items():
        report["threads"][str(k)] = {
            "wall_s": round(median(rows, "wall"), 3),
            "ratio_to_one_thread": round(median(rows, "wall") / one, 2),
            "dropped": max(r["dropped"] for r in rows),
        }
    write_result("pipeline", as_rows(report))


def as_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The report as the rows every benchmark writes (benchmarks/_common.py)."""
    labels = {
        "metricbus": "CPU per value, trainer + hosts: CSV + JSONL + TensorBoard",
        "metricbus_csv_jsonl": "CPU per value, trainer + hosts: CSV + JSONL",
        "direct": "CPU per value: csv.writer + msgspec JSON lines, one process",
        "other_checkout": f"CPU per value, CSV + JSONL + TB, {report.get('other_checkout')}",
    }
    rows: list[dict[str, Any]] = [
        {"what": labels[name], "value": cpu.pop("cpu_us_per_value"), "unit": "us/value", **cpu}
        for name, cpu in report["cpu"].items()
    ]
    rows += [
        {
            "what": f"{report['values']:,} log.scalar from {k} thread(s), CSV + JSONL",
            "value": t.pop("wall_s"),
            "unit": "s",
            **t,
        }
        for k, t in report["threads"].items()
    ]
    return rows


if __name__ == "__main__":
    main()
