"""ParquetSink: a live run read by DuckDB, pandas and polars while a MetricLogger writes it from
its sink host; the schema; parts written then renamed; compaction and recovery at open."""

from __future__ import annotations

import errno
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bus import Context, InvalidConfig, MetricBus, Metrics, Origin, Scalar, Text
from producers import MetricLogger
from sinks import PARQUET_SCHEMA_FIELDS, PARQUET_SCHEMA_VERSION, ParquetSink, parquet_schema
from tests.helpers import wait_until_sync

GLOB = "**/*.parquet"


def sql(query: str) -> list[tuple[Any, ...]]:
    """The rows of a DuckDB query, on a connection of its own (reads run next to the writer)."""
    with duckdb.connect() as con:
        return con.execute(query).fetchall()


def duck_count(run: Path) -> int:
    if not list(run.glob("*.parquet")):
        return 0
    return int(sql(f"SELECT count(*) FROM read_parquet('{run}/{GLOB}')")[0][0])


def test_a_live_run_is_read_by_duckdb_pandas_and_polars_while_it_trains(tmp_path: Path) -> None:
    """The logger's sink runs in its sink host; this process logs on a thread and reads the
    directory all the while: every read succeeds (no part is ever half-written), counts only
    grow, and at the end each reader sees every value."""
    run = tmp_path / "run"
    steps, chunks, stop = 4_000, 5, threading.Event()

    with MetricLogger([ParquetSink(run, part_interval=0.2)]) as log:
        assert log.stats()[log.sink_names[0]].where.startswith("host")

        def train() -> None:
            per_chunk = steps // chunks
            try:
                for chunk in range(chunks):
                    for step in range(chunk * per_chunk, (chunk + 1) * per_chunk):
                        log.scalars({"loss": 1 / (step + 1), "acc": step / steps}, step=step)
                    # the run goes on once this chunk is in a part: reads overlap several parts being written
                    wait_until_sync(lambda c=chunk: len(list(run.glob("part-*.parquet"))) > c, timeout=60)  # type: ignore[misc]
            finally:
                stop.set()

        trainer = threading.Thread(target=train)
        trainer.start()
        seen: list[int] = []
        while not stop.is_set() or len(seen) < 3:
            seen.append(duck_count(run))
            pandas_rows = len(pd.read_parquet(run)) if list(run.glob("*.parquet")) else 0
            polars_rows = pl.read_parquet(run / GLOB).height if list(run.glob("*.parquet")) else 0
            for path in run.glob("*.parquet"):
                pq.read_metadata(path)  # a visible part is whole: its footer is there
            assert seen[-1] <= pandas_rows <= polars_rows  # read one after the other: never fewer rows
            assert pandas_rows % 2 == 0  # each Metrics' two values land in one part, never half of it
            time.sleep(0.05)
        trainer.join()
        assert seen == sorted(seen)
        # the whole run, before close: at most part_interval + the batch interval behind
        wait_until_sync(lambda: duck_count(run) == 2 * steps, timeout=60)
        mid_run = sql(f"SELECT name, max(step), count(*) FROM read_parquet('{run}/{GLOB}') GROUP BY name ORDER BY name")
        assert mid_run == [("acc", steps - 1, steps), ("loss", steps - 1, steps)]
        frame = pd.read_parquet(run)
        assert len(frame) == 2 * steps and set(frame["name"]) == {"acc", "loss"}
        lazy = pl.scan_parquet(run / GLOB).filter(pl.col("name") == "loss").select(pl.col("value").min()).collect()
        assert lazy.item() == 1 / steps
    assert len(list(run.glob("part-*.parquet"))) >= 2  # parts, not one file at the end


def test_the_schema_origins_contexts_text_and_non_finite_values(tmp_path: Path) -> None:
    run = tmp_path / "run"
    origin = Origin(site="site-1", node="node-a", rank=3)
    with MetricLogger([ParquetSink(run, job="exp7")], origin=origin, context=Context(epoch=2, task="cls")) as log:
        log.scalar("x/nan", math.nan, step=1)
        log.scalar("x/inf", math.inf, step=2)
        log.scalars({"a": 1.5, "b": -math.inf}, step=3)
        log.text("notes", "hello, world\nline two", step=4)
        log.publish(Scalar("plain", 2.0, step=5, wall_time=1_700_000_000.25))
    table = pq.read_table(run)
    assert [(f.name, str(f.type), f.nullable) for f in table.schema] == list(PARQUET_SCHEMA_FIELDS)
    assert pq.read_schema(next(run.glob("*.parquet"))).metadata[b"metricbus.schema"] == PARQUET_SCHEMA_VERSION.encode()
    rows = {r["name"]: r for r in table.to_pylist()}
    assert math.isnan(rows["x/nan"]["value"]) and rows["x/inf"]["value"] == math.inf and rows["b"]["value"] == -math.inf
    assert rows["notes"]["text"] == "hello, world\nline two" and rows["notes"]["value"] is None
    assert rows["a"]["text"] is None
    a = rows["a"]
    assert (a["origin"], a["site"], a["node"], a["rank"], a["job"]) == (
        "site-1/node-a/rank3",
        "site-1",
        "node-a",
        3,
        "exp7",
    )
    assert (a["epoch"], a["round"], a["task"], a["step"]) == (2, None, "cls", 3)
    plain = rows["plain"]["wall_time"]
    assert plain.timestamp() == 1_700_000_000.25 and plain.tzinfo is not None
    duck = sql(f"SELECT typeof(wall_time), typeof(value) FROM read_parquet('{run}/{GLOB}') LIMIT 1")
    assert duck == [("TIMESTAMP WITH TIME ZONE", "DOUBLE")]


def test_values_become_visible_within_a_part_interval_when_logging_stops(tmp_path: Path) -> None:
    """No batch comes after the last value: the sink's timer writes its part anyway."""
    run = tmp_path / "run"
    with MetricLogger([ParquetSink(run, part_interval=0.5)]) as log:
        log.scalar("once", 1.0, step=0)
        wait_until_sync(lambda: duck_count(run) == 1, timeout=30)
        log.scalar("twice", 2.0, step=1)
        wait_until_sync(lambda: duck_count(run) == 2, timeout=30)
        assert not list(run.glob(".*.tmp"))  # no temporary file left once a part is in place


def test_part_rows_bounds_a_part(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with MetricLogger([ParquetSink(run, part_interval=3600, part_rows=100)]) as log:
        for step in range(1_000):
            log.scalar("v", float(step), step=step)
        wait_until_sync(lambda: duck_count(run) >= 900, timeout=60)  # only the size bound applies here
    assert all(pq.read_metadata(p).num_rows <= 100 + 1_000 for p in run.glob("*.parquet"))
    assert duck_count(run) == 1_000


@pytest.mark.anyio
async def test_compaction_at_close_keeps_every_row_in_one_file(tmp_path: Path) -> None:
    run = tmp_path / "run"
    sink = ParquetSink(run, compact=True)
    async with MetricBus() as bus:
        bus.add_sink(sink, max_batch=10, isolate="none")
        for step in range(5):
            await bus.publish(Metrics({"a": float(step), "b": 2.0 * step}, step=step))
            await bus.flush()  # a part each
    assert sink.parts_written == 5
    (only,) = run.glob("*.parquet")
    assert only.name == "part-000001-000005.parquet"
    assert pq.read_table(only).num_rows == 10


@pytest.mark.anyio
async def test_a_reopened_run_appends_and_a_killed_compaction_is_resolved(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    async with MetricBus() as bus:
        bus.add_sink(ParquetSink(run), isolate="none")
        for step in range(3):
            await bus.publish(Scalar("v", float(step), step=step))
            await bus.flush()
    parts = sorted(run.glob("*.parquet"))
    # as if a compaction was killed after its rename: the merged file and its parts, and a tmp file
    merged = pq.ParquetWriter(run / "part-000001-000003.parquet", parquet_schema())
    for part in parts:
        merged.write_table(pq.read_table(part, schema=parquet_schema()))
    merged.close()
    (run / ".part-000004.parquet.tmp").write_bytes(b"torn")
    async with MetricBus() as bus:
        bus.add_sink(ParquetSink(run), isolate="none")
        await bus.publish(Scalar("v", 3.0, step=3))
    assert sorted(p.name for p in run.glob("*parquet*")) == ["part-000001-000003.parquet", "part-000004.parquet"]
    assert duck_count(run) == 4


def test_bad_settings_are_refused_at_the_call(tmp_path: Path) -> None:
    for bad in ({"part_interval": 0}, {"part_interval": "5"}, {"part_rows": 0}, {"job": ""}, {"compression": "xz"}):
        with pytest.raises(InvalidConfig):
            ParquetSink(tmp_path / "run", **bad)  # type: ignore[arg-type]


def test_one_writer_per_run_directory(tmp_path: Path) -> None:
    with MetricLogger([ParquetSink(tmp_path / "run")]) as first:
        with pytest.raises(InvalidConfig, match=f"process {os.getpid()}"):
            MetricLogger([ParquetSink(tmp_path / "run")])
        first.scalar("x", 1.0, step=0)
    with MetricLogger([ParquetSink(tmp_path / "run")]) as again:  # free once the first closed
        again.scalar("x", 2.0, step=1)
    assert duck_count(tmp_path / "run") == 2


@pytest.mark.anyio
async def test_text_and_values_of_one_batch_in_one_part(tmp_path: Path) -> None:
    run = tmp_path / "run"
    async with MetricBus() as bus:
        bus.add_sink(ParquetSink(run), isolate="process")
        await bus.publish_many([Scalar("a", 1.0, step=0), Text("t", "x", step=0), Scalar("b", 2.0, step=0)])
    rows = sql(f"SELECT name, value, text FROM read_parquet('{run}/{GLOB}') ORDER BY name")
    assert rows == [("a", 1.0, None), ("b", 2.0, None), ("t", None, "x")]
    assert [p.name for p in run.glob("*.parquet")] == ["part-000001.parquet"]


def test_making_the_sinks_in_the_training_process_imports_neither_pyarrow_nor_prometheus_client(tmp_path: Path) -> None:
    """The training process builds the sinks and ships them to the host, which opens them."""
    code = (
        "import sys; from sinks import ParquetSink, PrometheusSink; from tests.redis_server import free_port; "
        f"ParquetSink({str(tmp_path)!r}); PrometheusSink(free_port()); "
        "print([m for m in ('pyarrow', 'prometheus_client') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ---- delivery: a batch is on disk once write_batch returns ----


def staged_files(run: Path) -> list[Path]:
    return sorted(run.glob(".part-*.arrows"))


def steps_in(run: Path) -> list[int]:
    return [row[0] for row in sql(f"SELECT step FROM read_parquet('{run}/{GLOB}') ORDER BY step")]


def test_a_killed_sink_host_loses_no_row_it_took_and_writes_none_twice(tmp_path: Path) -> None:
    """kill -9 of the sink host while rows wait for their part: they are staged on disk, the
    restarted host makes them a part, skips what its predecessor settled and gets the rest again."""
    run = tmp_path / "run"
    n = 9_000
    with MetricLogger([ParquetSink(run, part_interval=3600, part_rows=1_000_000)]) as log:
        name = log.sink_names[0]
        for step in range(3_000):
            log.scalar("v", float(step), step=step)
        log.flush()  # a part: what the dead host settled is in a part ...
        for step in range(3_000, 6_000):
            log.scalar("v", float(step), step=step)
        # ... or staged: settled (the progress record says so), waiting an hour for its part
        wait_until_sync(lambda: log.stats()[name].delivered == 6_000, timeout=60)
        assert len(staged_files(run)) == 1 and duck_count(run) == 3_000
        match = re.search(r"pid (\d+)", log.stats()[name].where)
        assert match is not None, log.stats()[name].where
        pid = int(match.group(1))
        os.kill(pid, signal.SIGKILL)
        for step in range(6_000, n):  # logging goes on: the dead host's pipe, then a new host
            log.scalar("v", float(step), step=step)
        log.flush()
        stats = log.stats()[name]
    assert stats.restarts == 1 and stats.balanced and stats.delivered == n
    assert steps_in(run) == list(range(n))  # every step, none twice
    assert staged_files(run) == []


@pytest.mark.anyio
async def test_staged_rows_of_a_killed_writer_become_their_part_at_open(tmp_path: Path) -> None:
    """What a kill leaves: a staging file with a torn last record (its whole records become the
    part), and one whose part was written before the file could be removed (it goes)."""
    run, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    async with MetricBus() as bus:
        bus.add_sink(ParquetSink(run), isolate="none")
        for step in range(2):
            await bus.publish(Scalar("v", float(step), step=step))
            await bus.flush()  # parts 1 and 2
    staging = ParquetSink(elsewhere, part_interval=3600)
    await staging.open()
    await staging.write_batch([Scalar("v", 2.0, step=2), Scalar("v", 3.0, step=3)])
    await staging.write_batch([Scalar("v", 4.0, step=4)])
    whole = (elsewhere / ".part-000001.arrows").read_bytes()
    (run / ".part-000002.arrows").write_bytes(whole[:-20])  # part 2 exists: this one is stale
    (run / ".part-000003.arrows").write_bytes(whole + b"\xff\xff\xff\xff\x40\x01")  # a torn third record
    await staging.close()
    sink = ParquetSink(run)
    async with MetricBus() as bus:
        bus.add_sink(sink, isolate="none")
        await bus.publish(Scalar("v", 5.0, step=5))
    assert sorted(p.name for p in run.glob("part-*")) == [f"part-00000{i}.parquet" for i in range(1, 5)]
    assert steps_in(run) == list(range(6))
    assert staged_files(run) == [] and sink.parts_written == 1


@pytest.mark.anyio
async def test_a_failed_append_leaves_no_row_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An append that fails midway (a full disk), and whose cut fails too: nothing of that batch
    is staged, on disk or in memory, when the bus retries it."""
    run = tmp_path / "run"
    sink = ParquetSink(run, part_interval=3600)
    await sink.open()
    await sink.write_batch([Scalar("v", 0.0, step=0)])
    staged = sink._staging
    write, truncate, failures = os.write, os.ftruncate, {"write": 1, "truncate": 1}

    def half_then_full(fd: int, data: Any) -> int:
        if fd == staged._fd and failures["write"]:
            failures["write"] -= 1
            write(fd, bytes(data)[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        return write(fd, data)

    def cut_fails_once(fd: int, length: int) -> None:
        if failures["truncate"]:
            failures["truncate"] -= 1
            raise OSError(errno.EIO, "I/O error")
        truncate(fd, length)

    monkeypatch.setattr(os, "write", half_then_full)
    monkeypatch.setattr(os, "ftruncate", cut_fails_once)
    batch = [Scalar("v", float(step), step=step) for step in range(1, 100)]
    with pytest.raises(OSError, match="No space"):
        await sink.write_batch(batch)
    await sink.write_batch(batch)  # the bus's retry: the torn bytes are cut off first
    table = pa.ipc.open_stream(staged.path.read_bytes()).read_all()
    assert table.column("step").to_pylist() == list(range(100))
    await sink.close()
    assert steps_in(run) == list(range(100))


@pytest.mark.anyio
async def test_a_failed_part_write_keeps_the_rows_staged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A part that cannot be written: the batch that filled it stays delivered (it is staged);
    the next batch fails (the sink is down) without being staged; once the disk is back, each row
    is written once."""
    import sinks._parquet as module

    run = tmp_path / "run"
    sink = ParquetSink(run, part_rows=2)
    await sink.open()
    real = module._write_part_file

    def full_disk(*args: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(module, "_write_part_file", full_disk)
    await sink.write_batch([Scalar("v", 0.0, step=0), Scalar("v", 1.0, step=1)])  # staged; its part fails
    with pytest.raises(OSError, match="No space"):
        await sink.write_batch([Scalar("v", 2.0, step=2)])  # the part is due first: not staged
    monkeypatch.setattr(module, "_write_part_file", real)
    await sink.write_batch([Scalar("v", 2.0, step=2)])
    await sink.close()
    assert steps_in(run) == [0, 1, 2] and sink.parts_written == 2
