"""Open formats: ParquetSink next to CsvSink in one run, how soon DuckDB sees a value, and the
time of a Prometheus scrape.

pace: a MetricLogger logs N values (10 per step) into a CsvSink and a ParquetSink, each in a
sink host of its own (isolate="process"), in the same run, after a warm-up; per sink, values/s
until it has every value (delivered: CSV has written its rows, Parquet has staged them on
disk for its next part), values/s until both are flushed (the part written), and each host's
CPU per value over the whole (/proc, utime+stime, the part writes included).

visibility: a value a step every 0.1 s into a ParquetSink (part_interval=1 s) while a reader
polls DuckDB's `max(step)` over `read_parquet('run/**/*.parquet')` every 20 ms; seconds from
the log call to the first query that sees it, median and max (goal: <= part_interval + 1 s).

scrape: a PrometheusSink holding 5,000 series (500 origins x 8 metrics, plus each origin's step
and wall time), and one holding 5,000 origins x 8 metrics capped at the default 10,000 series;
median and max wall time of a scrape over loopback HTTP (goal: < 100 ms).
"""

from __future__ import annotations

import re
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import duckdb

from benchmarks._common import write_result
from bus import Origin, Scalar
from producers import MetricLogger
from sinks import CsvSink, ParquetSink, PrometheusSink
from tests.redis_server import free_port

STEPS = 50_000
PER_STEP = 10
CLOCK = 100  # os.sysconf("SC_CLK_TCK") on Linux


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK  # utime, stime


def _pid(where: str) -> int:
    match = re.search(r"pid (\d+)", where)
    assert match is not None, where
    return int(match.group(1))


def pace(tmp: Path) -> list[dict[str, object]]:
    values = STEPS * PER_STEP
    names = [f"m/{i}" for i in range(PER_STEP)]
    with MetricLogger() as log:
        csv_name = log.add_sink(CsvSink(tmp / "m.csv"), isolate="process")
        pq_name = log.add_sink(ParquetSink(tmp / "pq"), isolate="process")
        pids = {name: _pid(log.stats()[name].where) for name in (csv_name, pq_name)}
        for step in range(STEPS, STEPS + 1_000):  # warm-up: each host imports its libraries, opens its file
            log.scalars(dict.fromkeys(names, 0.0), step=step)
        log.flush()
        warm = log.stats()[csv_name].delivered
        cpu0 = {name: _cpu_seconds(pid) for name, pid in pids.items()}
        start = time.perf_counter()
        for step in range(STEPS):
            log.scalars(dict(zip(names, (step * 0.001 + i for i in range(PER_STEP)), strict=True)), step=step)
        done: dict[str, float] = {}
        deadline = time.perf_counter() + 300
        while len(done) < 2 and time.perf_counter() < deadline:
            for name, s in log.stats().items():
                if name not in done and s.delivered == warm + STEPS:  # one Metrics event a step
                    done[name] = time.perf_counter() - start
            time.sleep(0.005)
        log.flush()
        flushed = time.perf_counter() - start
        cpu = {name: _cpu_seconds(pid) - cpu0[name] for name, pid in pids.items()}
    rows: list[dict[str, object]] = []
    for label, name in (("CsvSink", csv_name), ("ParquetSink", pq_name)):
        rows.append(
            {
                "what": f"{label}: values/s until delivered (own sink host)",
                "value": values / done[name],
                "unit": "values/s",
            }
        )
        rows.append({"what": f"{label}: host CPU per value", "value": cpu[name] / values * 1e6, "unit": "us"})
    rows.append({"what": "both flushed (parquet part written)", "value": values / flushed, "unit": "values/s"})
    rows.append(
        {"what": "ParquetSink / CsvSink pace", "value": done[csv_name] / done[pq_name], "unit": "x", "goal": ">= 1.0"}
    )
    return rows


def visibility(tmp: Path) -> list[dict[str, object]]:
    run, part_interval = tmp / "run", 1.0
    logged: dict[int, float] = {}
    seen: dict[int, float] = {}
    stop = threading.Event()

    def reader() -> None:
        with duckdb.connect() as con:
            while not stop.is_set():
                if any(run.glob("*.parquet")):
                    (top,) = con.execute(f"SELECT max(step) FROM read_parquet('{run}/**/*.parquet')").fetchall()[0]
                    now = time.time()
                    for step in range(len(seen), (top or -1) + 1):
                        seen.setdefault(step, now)
                time.sleep(0.02)

    with MetricLogger([ParquetSink(run, part_interval=part_interval)]) as log:
        log.scalar("warmup", 0.0, step=0)
        log.flush()  # the host is up before the clock starts
        thread = threading.Thread(target=reader, daemon=True)
        thread.start()
        for step in range(1, 101):
            logged[step] = time.time()
            log.scalar("v", float(step), step=step)
            time.sleep(0.1)
        deadline = time.time() + 30
        while len([s for s in logged if s in seen]) < len(logged) and time.time() < deadline:
            time.sleep(0.05)
        stop.set()
        thread.join()
    delays = [seen[s] - t for s, t in logged.items() if s in seen]
    return [
        {
            "what": "logged -> visible to DuckDB, median (part_interval 1 s)",
            "value": statistics.median(delays),
            "unit": "s",
        },
        {"what": "logged -> visible to DuckDB, max", "value": max(delays), "unit": "s", "goal": "<= 2.0"},
        {
            "what": "values seen by DuckDB / logged",
            "value": len(delays) / len(logged),
            "unit": "share",
            "seen": len(delays),
            "logged": len(logged),
        },
    ]


def _scrape_times(url: str, repeats: int = 20) -> tuple[list[float], int]:
    times, size = [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        with urllib.request.urlopen(url, timeout=10) as response:
            size = len(response.read())
        times.append(time.perf_counter() - start)
    return times, size


def scrape(origins: int, metrics: int = 8) -> dict[str, object]:
    sink = PrometheusSink(free_port())
    with MetricLogger([sink], raise_on_loss=False) as log:  # past the cap, values are refused (counted)
        for rank in range(origins):
            for m in range(metrics):
                log.publish(Scalar(f"train/m{m}", float(rank), step=1, origin=Origin(rank=rank)))
        log.flush()
        times, size = _scrape_times(sink.url)
        text = urllib.request.urlopen(sink.url, timeout=10).read().decode()
        held = float(re.search(r"^metricbus_prometheus_series (\S+)$", text, re.M).group(1))  # type: ignore[union-attr]
    return {
        "what": f"scrape, {origins:,} origins x {metrics} metrics ({held:,.0f} series held)",
        "value": statistics.median(times) * 1e3,
        "unit": "ms",
        "max_ms": max(times) * 1e3,
        "bytes": size,
        "goal": "< 100",
    }


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        rows = pace(Path(tmp))
    with tempfile.TemporaryDirectory() as tmp:
        rows += visibility(Path(tmp))
    rows += [scrape(500), scrape(5_000)]
    write_result("open_formats", rows)


if __name__ == "__main__":
    main()
