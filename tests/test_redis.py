"""The Redis bridge against a real redis-server: RedisSink on producing processes, RedisSource
(and `metricbus aggregate`) on the aggregator. Events are counted on disk with csv and read_jsonl."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from bus import Context, Event, InvalidConfig, MetricBus, Metrics, Origin, Scalar, Text, wire
from producers import RedisSource, origin_from_env
from producers._plan import load_plan
from sinks import MemorySink, RedisSink, read_jsonl
from sinks.redis_bridge import ENTRY_VERSION, entry_fields
from tests.helpers import wait_until, wait_until_sync
from tests.redis_server import RedisServer
from tests.stats_table_reader import read_wide

ROOT = Path(__file__).resolve().parent.parent
CHILD = Path(__file__).with_name("redis_child.py")
pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    srv = RedisServer(tmp_path / "redis", appendonly=True)
    srv.start()
    yield srv
    srv.stop()


# ---- helpers: processes, Redis state, files ----


def start_producer(
    srv: RedisServer, tmp: Path, rank: int, n: int, *, every: int = 0, pause: float = 0.0
) -> subprocess.Popen[bytes]:
    args = [sys.executable, str(CHILD), srv.url, "s", str(rank), str(n), "--every", str(every), "--pause", str(pause)]
    err = open(tmp / f"producer{rank}.err", "wb")  # noqa: SIM115 - the child owns it
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=err)
    _children.append(proc)
    return proc


def producer_stats(proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    stats: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return stats


def write_plan(tmp: Path, *, tensorboard: bool = False) -> Path:
    plan = tmp / "plan.toml"
    text = (
        f'[[sinks]]\ntemplate = "sinks.CsvSink"\nsettings = {{ path = "{(tmp / "out.csv").as_posix()}" }}\n'
        f'[[sinks]]\ntemplate = "sinks.JsonlSink"\nsettings = {{ path = "{(tmp / "out.jsonl").as_posix()}" }}\n'
    )
    if tensorboard:
        text += (
            f'[[sinks]]\ntemplate = "sinks.TensorBoardSink"\nsettings = {{ logdir = "{(tmp / "tb").as_posix()}" }}\n'
        )
    plan.write_text(text)
    return plan


def start_aggregator(
    srv: RedisServer, tmp: Path, tag: str, *options: str, tensorboard: bool = False
) -> subprocess.Popen[bytes]:
    """`metricbus aggregate` into CSV and JSONL (and TensorBoard), its pipeline metrics on by
    default (every 5 s: `options` may change that), its stderr in aggregator-TAG.err."""
    args = [
        *(sys.executable, "-m", "producers._cli", "aggregate", "--redis", srv.url, "--stream", "s"),
        *("--plan", str(write_plan(tmp, tensorboard=tensorboard)), "--stats", str(tmp / f"stats-{tag}.json")),
        *("--consumer", "agg", *options),
    ]
    err = open(tmp / f"aggregator-{tag}.err", "wb")  # noqa: SIM115 - the child owns it
    proc = subprocess.Popen(args, cwd=ROOT, stderr=err, env={**os.environ, "COLUMNS": "200"})
    _children.append(proc)
    return proc


_children: list[subprocess.Popen[Any]] = []  # every child a test starts: none outlives it


@pytest.fixture(autouse=True)
def _no_child_left_behind() -> Iterator[None]:
    yield
    while _children:
        proc = _children.pop()
        if proc.poll() is None:  # the test failed before it stopped it
            proc.kill()
            proc.wait(10)


def stop_aggregator(proc: subprocess.Popen[bytes], tmp: Path, tag: str) -> dict[str, Any]:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, (tmp / f"aggregator-{tag}.err").read_text()
    stats: dict[str, Any] = json.loads((tmp / f"stats-{tag}.json").read_text())
    return stats


def caught_up(srv: RedisServer, stream: str = "s", group: str = "metricbus") -> bool:
    """Every entry of the stream delivered to the group and acknowledged."""
    r = redis.from_url(srv.url)
    try:
        last = r.xinfo_stream(stream)["last-generated-id"]
        info = next(g for g in r.xinfo_groups(stream) if g["name"] == group.encode())
        return bool(info["pending"] == 0 and info["last-delivered-id"] == last)
    except (redis.RedisError, StopIteration):
        return False
    finally:
        r.close()


def applied_entries(srv: RedisServer) -> int:
    """Batches applied so far, as the aggregator recorded them in Redis."""
    r = redis.from_url(srv.url)
    try:
        return sum(int(v) for v in r.hgetall("s:applied").values())
    finally:
        r.close()


def is_pipeline(name: str) -> bool:
    """A series of the aggregator's own health (PipelineMetrics), not of the producers."""
    return name.startswith("metricbus/")


def is_own(event: Event) -> bool:
    return isinstance(event, Metrics) and any(map(is_pipeline, event.values))


def on_disk(tmp: Path) -> tuple[Counter[tuple[str, int]], Counter[tuple[str, int]]]:
    """(origin label, step) -> times seen, in the CSV and in the JSONL (the producers' events:
    the pipeline's own series left out)."""
    with open(tmp / "out.csv", newline="") as f:
        rows = [row for row in csv.DictReader(f) if not is_pipeline(row["name"])]
    in_csv = Counter((row["origin"], int(row["step"])) for row in rows)
    events = [
        e for e in read_jsonl(tmp / "out.jsonl") if not (isinstance(e, Metrics) and any(map(is_pipeline, e.values)))
    ]
    in_jsonl = Counter((e.origin.label, e.step) for e in events)
    return in_csv, in_jsonl


def expected(ranks: range, n: int) -> Counter[tuple[str, int]]:
    return Counter((f"rank{r}", step) for r in ranks for step in range(n))


# ---- in-process: the sink, the source, de-duplication, bad input ----


@pytest.mark.anyio
async def test_events_cross_with_origin_step_and_wall_time(server: RedisServer) -> None:
    sent = [Scalar("loss", i / 10, i, wall_time=1000.0 + i, origin=Origin(site="a", rank=3)) for i in range(500)]
    async with MetricBus() as bus:
        name = bus.add_sink(RedisSink(server.url, stream="s"))
        await bus.publish_many(sent)
    assert bus.stats()[name].delivered == 500
    entries = redis.from_url(server.url).xrange("s")  # each a version-2 entry whose body is a bus.wire body
    assert {fields[b"mb"] for _, fields in entries} == {ENTRY_VERSION}
    assert [e for _, fields in entries for e in wire.decode(fields[b"d"])] == sent
    memory = MemorySink()
    source = RedisSource(server.url, stream="s")
    async with MetricBus([memory]) as agg:
        agg.add_producer(source)
        await wait_until(lambda: len(memory.events) == 500 and source.stats().lag == 0)
    assert memory.events == sent
    assert source.stats().pending == 0


@pytest.mark.anyio
async def test_a_retried_batch_keeps_its_sequence_and_is_applied_once(server: RedisServer) -> None:
    sink = RedisSink(server.url, stream="s", producer_id="p1")
    batch = [Scalar("x", 1.0, 0), Scalar("x", 2.0, 1)]
    await sink.open()
    await sink.write_batch(batch)
    await sink.write_batch(batch)  # the route retrying a batch whose first XADD landed
    await sink.write_batch([Scalar("x", 3.0, 2)])
    await sink.close()
    memory = MemorySink()
    source = RedisSource(server.url, stream="s")
    async with MetricBus([memory]) as agg:
        agg.add_producer(source)
        await wait_until(lambda: source.stats().entries + source.stats().duplicates == 3)
    assert [e.step for e in memory.events] == [0, 1, 2]
    stats = source.stats()
    assert stats.producers["p1"].duplicates == 1 and stats.producers["p1"].last_seq == 2
    assert redis.from_url(server.url).hgetall("s:applied") == {b"p1": b"2"}


@pytest.mark.anyio
async def test_bad_entries_are_counted_acknowledged_and_skipped(server: RedisServer, caplog: Any) -> None:
    r = redis.from_url(server.url)
    good = entry_fields("p1", 3, [Scalar("x", 1.0, 7)])
    r.xadd("s", {"hello": "world"})  # not ours
    r.xadd("s", {**good, "mb": "1", "s": 4})  # the layout before bus.wire: not read as version 2
    r.xadd("s", {**good, "s": 1, "d": good["d"][:-3]})  # truncated
    r.xadd("s", {**good, "s": 2, "d": wire.encode((), [{"kind": "nope", "x": 1}])})
    r.xadd("s", good)
    memory = MemorySink()
    source = RedisSource(server.url, stream="s")
    async with MetricBus([memory]) as agg:
        agg.add_producer(source)
        await wait_until(lambda: len(memory.events) == 1 and source.stats().pending == 0)
    stats = source.stats()
    assert stats.bad_entries == 4 and stats.producers["p1"].bad == 2 and stats.events == 1
    assert "not a metricbus entry" in caplog.text and "payload of batch 1" in caplog.text
    assert r.xpending("s", "metricbus")["pending"] == 0  # acknowledged: they never come back


@pytest.mark.anyio
async def test_an_entry_body_is_any_wire_body_rows_included(server: RedisServer) -> None:
    """The entry's `d` is a `bus.wire` body: the compact rows the sink host's channel carries
    (a scope table, then Scalar and Metrics rows) read back as the events they stand for."""
    site = Origin(site="a", rank=1)
    body = wire.encode([(site, Context(epoch=2))], [("loss", 0.5, 3, 1.0e9, 0), ({"acc": 0.9}, 3, 1.0e9, 0)])
    r = redis.from_url(server.url)
    r.xadd("s", {"mb": ENTRY_VERSION, "p": "p1", "s": 1, "d": body})
    memory = MemorySink()
    source = RedisSource(server.url, stream="s")
    async with MetricBus([memory]) as agg:
        agg.add_producer(source)
        await wait_until(lambda: len(memory.events) == 2)
    assert memory.events == [
        Scalar("loss", 0.5, 3, wall_time=1.0e9, origin=site, context=Context(epoch=2)),
        Metrics({"acc": 0.9}, 3, wall_time=1.0e9, origin=site, context=Context(epoch=2)),
    ]


@pytest.mark.anyio
async def test_password_urls_work_and_the_password_is_never_shown(tmp_path: Path) -> None:
    srv = RedisServer(tmp_path / "auth", password="s3cret-pw")
    srv.start()
    try:
        sink = RedisSink(srv.url, stream="s")
        assert "s3cret-pw" not in sink.name and ":***@" in sink.name
        async with MetricBus() as bus:
            name = bus.add_sink(sink)
            await bus.publish_many([Scalar("x", 1.0, i) for i in range(10)])
        assert bus.stats()[name].delivered == 10
        wrong = srv.url.replace("s3cret-pw", "wrong-pw")
        async with MetricBus(raise_on_loss=False) as bus:
            name = bus.add_sink(RedisSink(wrong, stream="s"), retry=_one_try())
            await bus.publish(Scalar("x", 1.0, 0))
        error = bus.stats()[name].last_error or ""
        assert "wrong-pw" not in error and "XADD" in error
        memory = MemorySink()
        source = RedisSource(srv.url, stream="s")
        async with MetricBus([memory]) as agg:
            agg.add_producer(source)
            await wait_until(lambda: len(memory.events) == 10)
        assert "s3cret-pw" not in repr(source.stats()) and "s3cret-pw" not in source.name
    finally:
        srv.stop()


def _one_try() -> Any:
    from bus import RetryPolicy

    return RetryPolicy(max_attempts=1)


def test_bad_options_are_invalid_config() -> None:
    with pytest.raises(InvalidConfig):
        RedisSink("http://127.0.0.1:6379")
    with pytest.raises(InvalidConfig):
        RedisSink("redis://127.0.0.1:6379", maxlen=0)
    with pytest.raises(InvalidConfig):
        RedisSource("redis://127.0.0.1:6379", count=0)


def test_origin_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "5")
    monkeypatch.setenv("GROUP_RANK", "1")
    assert origin_from_env() == Origin(node="node1", rank=5)
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("GROUP_RANK")
    assert origin_from_env(site="site-2") == Origin(site="site-2")


def test_a_plan_can_name_a_redis_source(tmp_path: Path) -> None:
    plan = tmp_path / "plan.toml"
    plan.write_text(
        '[[sinks]]\ntemplate = "sinks.MemorySink"\n'
        '[[producers]]\ntemplate = "producers.RedisSource"\n'
        'settings = { url = "redis://:pw@127.0.0.1:1/0", stream = "runs" }\n'
    )
    (source,) = load_plan(plan).producers
    assert isinstance(source, RedisSource) and source.stream == "runs"
    plan.write_text('[[producers]]\ntemplate = "producers.RedisSource"\nsettings = { url = "http://x" }\n')
    with pytest.raises(InvalidConfig, match=r"producers\[0\]"):
        load_plan(plan)


# ---- real processes: producers, the aggregate service ----


def test_n_producers_into_one_aggregator_exactly_once(server: RedisServer, tmp_path: Path) -> None:
    n, ranks = 20_000, range(4)
    aggregator = start_aggregator(server, tmp_path, "a")
    producers = [start_producer(server, tmp_path, rank, n) for rank in ranks]
    sent = [producer_stats(p) for p in producers]
    wait_until_sync(lambda: caught_up(server), timeout=30)
    stats = stop_aggregator(aggregator, tmp_path, "a")
    in_csv, in_jsonl = on_disk(tmp_path)
    assert in_csv == expected(ranks, n) and in_jsonl == expected(ranks, n)
    # counters balance end to end: published on the producers = delivered at the aggregator + dropped
    published = sum(s["published"] for s in sent)
    dropped = sum(sum(s["dropped"].values()) for s in sent)
    (source,) = stats["sources"]
    assert published == source["events"] + dropped == 4 * n and dropped == 0
    own = stats["pipeline"]["samples"]  # one Metrics event per sample of its own health, into every sink
    assert all(s["delivered"] == 4 * n + own and s["dropped"] == {} for s in stats["sinks"].values())
    assert stats["ok"] is True and stats["failures"] == []


def test_aggregator_killed_and_restarted_loses_nothing(server: RedisServer, tmp_path: Path) -> None:
    n, ranks = 20_000, range(3)
    producers = [start_producer(server, tmp_path, rank, n, every=500, pause=0.05) for rank in ranks]
    first = start_aggregator(server, tmp_path, "a")
    wait_until_sync(lambda: applied_entries(server) >= 20, timeout=20)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    second = start_aggregator(server, tmp_path, "b")
    for p in producers:
        producer_stats(p)
    wait_until_sync(lambda: caught_up(server), timeout=30)
    (source,) = stop_aggregator(second, tmp_path, "b")["sources"]
    in_csv, in_jsonl = on_disk(tmp_path)
    for seen in (in_csv, in_jsonl):
        assert set(seen) == set(expected(ranks, n))  # 0 lost
        twice = sum(c - 1 for c in seen.values())
        assert twice <= source["recovered_events"]  # duplicates: only what was written, not acknowledged


def test_graceful_restart_writes_nothing_twice(server: RedisServer, tmp_path: Path) -> None:
    n, ranks = 20_000, range(3)
    producers = [start_producer(server, tmp_path, rank, n, every=500, pause=0.05) for rank in ranks]
    first = start_aggregator(server, tmp_path, "a")
    wait_until_sync(lambda: applied_entries(server) >= 20, timeout=20)
    stop_aggregator(first, tmp_path, "a")
    second = start_aggregator(server, tmp_path, "b")
    for p in producers:
        producer_stats(p)
    wait_until_sync(lambda: caught_up(server), timeout=30)
    (source,) = stop_aggregator(second, tmp_path, "b")["sources"]
    in_csv, in_jsonl = on_disk(tmp_path)
    assert in_csv == expected(ranks, n) and in_jsonl == expected(ranks, n)
    assert source["recovered_entries"] == 0


def test_redis_restarted_mid_run_loses_nothing(server: RedisServer, tmp_path: Path) -> None:
    n, ranks = 20_000, range(3)
    aggregator = start_aggregator(server, tmp_path, "a")
    producers = [start_producer(server, tmp_path, rank, n, every=500, pause=0.05) for rank in ranks]
    wait_until_sync(lambda: applied_entries(server) >= 10, timeout=20)
    server.stop()  # SIGTERM: with appendonly yes, what it acknowledged is on disk
    errs = [tmp_path / f"producer{rank}.err" for rank in ranks]
    wait_until_sync(lambda: all("is down" in e.read_text() for e in errs), timeout=20)  # Redis is gone: down
    server.start()
    sent = [producer_stats(p) for p in producers]
    wait_until_sync(lambda: caught_up(server), timeout=30)
    stop_aggregator(aggregator, tmp_path, "a")
    in_csv, in_jsonl = on_disk(tmp_path)
    assert in_csv == expected(ranks, n) and in_jsonl == expected(ranks, n)
    # every producer saw Redis down ("is down" above), so each had to reconnect to deliver it all;
    # whether the aggregator noticed the outage depends on where its read was: not asserted
    assert all(s["delivered"] == n and s["restarts"] >= 1 for s in sent)


@pytest.mark.anyio
async def test_a_killed_producer_shows_in_the_stats_and_the_others_finish(server: RedisServer, tmp_path: Path) -> None:
    n, ranks = 10_000, range(3)
    producers = [start_producer(server, tmp_path, rank, n, every=250, pause=0.05) for rank in ranks]
    memory = MemorySink()
    source = RedisSource(server.url, stream="s")
    async with MetricBus([memory]) as agg:
        agg.add_producer(source)
        await wait_until(lambda: len(source.stats().producers) == 3 and source.stats().events > 1_000, within=20)
        os.kill(producers[0].pid, signal.SIGKILL)
        producers[0].wait(10)
        for p in producers[1:]:
            await wait_until(lambda p=p: p.poll() is not None, within=30)  # type: ignore[misc]
        await wait_until(lambda: caught_up(server), within=20)
        stats = source.stats()
    by_rank = Counter(e.origin.rank for e in memory.events)
    assert by_rank[1] == by_rank[2] == n and by_rank[0] < n
    progress = sorted(stats.producers.values(), key=lambda p: p.events)
    assert progress[0].events == by_rank[0] and [p.events for p in progress[1:]] == [n, n]
    assert progress[0].idle > 0


@pytest.mark.anyio
async def test_pending_entries_of_a_dead_consumer_are_taken_over(server: RedisServer) -> None:
    """What a killed aggregator leaves: entries read, not acknowledged (seq 2 also applied)."""
    r = redis.from_url(server.url)
    r.xgroup_create("s", "metricbus", id="0", mkstream=True)
    for seq in (1, 2, 3):
        r.xadd("s", entry_fields("p1", seq, [Scalar("x", 1.0, seq)]))
    assert len(r.xreadgroup("metricbus", "dead", {"s": ">"})[0][1]) == 3  # now pending with "dead"
    r.hset("s:applied", "p1", 2)  # it had applied 1 and 2 (the XACK + HSET of 1-2 went through, say)
    r.xack("s", "metricbus", *[e[0] for e in r.xrange("s", count=1)])  # and acknowledged 1
    memory = MemorySink()
    source = RedisSource(server.url, stream="s", consumer="new")
    async with MetricBus([memory]) as agg:
        agg.add_producer(source)
        await wait_until(lambda: source.stats().pending == 0 and len(memory.events) == 1)
    stats = source.stats()
    assert [e.step for e in memory.events] == [3]
    assert stats.duplicates == 1 and stats.recovered_entries == 1 and stats.recovered_events == 1


# ---- the docs' two-terminal example (docs/many-processes.md), as written (only the server's address differs) ----


def test_the_docs_two_terminal_example_runs_as_written(server: RedisServer, tmp_path: Path) -> None:
    section = (ROOT / "docs" / "many-processes.md").read_text().split("## Two terminals", 1)[1].split("\n## ", 1)[0]
    plan = section.split("```toml\n", 1)[1].split("```", 1)[0]
    script = section.split("```python redis\n", 1)[1].split("```", 1)[0]
    readme_url = "redis://127.0.0.1:6379/0"
    assert readme_url in script
    (tmp_path / "plan.toml").write_text(plan)
    (tmp_path / "train.py").write_text(script.replace(readme_url, server.url))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = ["aggregate", "--redis", server.url, "--stream", "metricbus", "--plan", "plan.toml"]
    aggregator = subprocess.Popen(
        [sys.executable, "-m", "producers._cli", *command],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        train = subprocess.run([sys.executable, "train.py"], cwd=tmp_path, env=env, capture_output=True, timeout=60)
        assert train.returncode == 0, train.stderr.decode()[-2_000:]
        wait_until_sync(lambda: caught_up(server, stream="metricbus"), timeout=30)
    finally:
        aggregator.send_signal(signal.SIGTERM)
        _, err = aggregator.communicate(timeout=30)
    assert aggregator.returncode == 0, err.decode()[-2_000:]
    with open(tmp_path / "runs/agg/metrics.csv", newline="") as f:
        rows = [row for row in csv.DictReader(f) if not is_pipeline(row["name"])]
    assert [int(r["step"]) for r in rows] == list(range(30_000))  # every step once, in order
    assert rows[9]["name"] == "train/loss" and float(rows[9]["value"]) == 1.0 / 10
    events = read_jsonl(tmp_path / "runs/agg/metrics.jsonl")
    assert sum(1 for e in events if not is_own(e)) == 30_000
    assert b"30,000" in err  # the progress line (stderr) shows the producer's count


def _last_own_sample_saw_nothing_unread(path: Path) -> bool:
    """A pipeline sample taken once the aggregator had read everything is on disk."""
    own = [e for e in read_jsonl(path) if is_own(e)] if path.exists() else []
    return bool(own) and own[-1].values.get("metricbus/source_s/unread") == 0.0  # type: ignore[union-attr]


def test_aggregate_shows_the_balance_live_and_at_the_end_and_its_own_health_in_the_sinks(
    server: RedisServer, tmp_path: Path
) -> None:
    n, ranks = 5_000, range(2)
    options = ("--every", "0.2", "--pipeline-every", "0.2")
    aggregator = start_aggregator(server, tmp_path, "a", *options, tensorboard=True)
    producers = [start_producer(server, tmp_path, rank, n, every=500, pause=0.1) for rank in ranks]
    for p in producers:
        producer_stats(p)
    wait_until_sync(lambda: caught_up(server), timeout=30)
    wait_until_sync(lambda: _last_own_sample_saw_nothing_unread(tmp_path / "out.jsonl"), timeout=10)
    stats = stop_aggregator(aggregator, tmp_path, "a")
    err = (tmp_path / "aggregator-a.err").read_text()
    assert stats["ok"] is True and stats["failures"] == []

    # live: each sink's balance on a line of its own (stderr is not a terminal here)
    live = [line for line in err.splitlines() if line.startswith(f"  csv:{tmp_path}/out.csv [")]
    assert live and all(" published = " in line and " delivered" in line for line in live)
    # at the end: the table, whole names, every row balanced and equal to the --stats JSON
    rows = {row.name: row for row in read_wide(err.split("aggregate: sinks", 1)[1])}
    assert set(rows) == set(stats["sinks"])
    for name, row in rows.items():
        assert row.balanced and row.state == "closed"
        assert row.counts["delivered"] == stats["sinks"][name]["delivered"] == 2 * n + stats["pipeline"]["samples"]

    # its own health, read back: per sink from the stats, per producer (site) from the source
    samples = stats["pipeline"]["samples"]
    labels = stats["pipeline"]["labels"]
    assert samples >= 1 and set(labels.values()) == {"csv_out.csv", "jsonl_out.jsonl", "tensorboard_tb"}
    own = [e for e in read_jsonl(tmp_path / "out.jsonl") if is_own(e)]
    assert [e.step for e in own] == list(range(samples))
    last = own[-1].values
    for label in labels.values():
        assert last[f"metricbus/{label}/down"] == 0.0 and last[f"metricbus/{label}/dropped"] == 0.0
    ids = {key.split("/")[2] for key in last if key.startswith("metricbus/producer/")}
    assert len(ids) == 2 and all(last[f"metricbus/producer/{pid}/events"] == n for pid in ids)
    assert last["metricbus/source_s/unread"] == 0.0
    acc = EventAccumulator(str(tmp_path / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    for tag in [f"metricbus/producer/{pid}/idle_s" for pid in ids] + ["metricbus/tensorboard_tb/queue"]:
        in_jsonl = {e.step: np.float32(e.values[tag]) for e in own if isinstance(e, Metrics) and tag in e.values}
        assert {p.step: p.value for p in acc.Scalars(tag)} == in_jsonl and in_jsonl, tag


def test_aggregate_without_pipeline_metrics_writes_only_what_it_reads(server: RedisServer, tmp_path: Path) -> None:
    aggregator = start_aggregator(server, tmp_path, "a", "--pipeline-every", "0.05", "--no-pipeline-metrics")
    producer_stats(start_producer(server, tmp_path, 0, 2_000, every=500, pause=0.1))
    wait_until_sync(lambda: caught_up(server), timeout=30)
    stats = stop_aggregator(aggregator, tmp_path, "a")
    assert stats["pipeline"] is None
    assert all(s["delivered"] == 2_000 for s in stats["sinks"].values())
    assert not any(isinstance(e, Metrics) for e in read_jsonl(tmp_path / "out.jsonl"))


def test_an_entry_carries_rows_that_decode_to_the_same_events_and_share_their_scopes() -> None:
    """RedisSink's body (`wire.encode_rows`): Scalars and Metrics as rows of their scope, any
    other kind whole, in order; a third of the bytes of whole events; the events that come out
    of one entry share each origin and context (a sink works out a label once per entry)."""
    site, rank = Origin(site="a", rank=1), Origin(rank=2)
    events: list[Event] = [
        *(Scalar("loss", 0.5 + i, i, wall_time=1.0e9 + i, origin=rank) for i in range(100)),
        Metrics({"acc": 0.9}, 3, wall_time=1.0e9, origin=site, context=Context(epoch=2)),
        Scalar("lr", 0.1, 3, wall_time=1.0e9, origin=site, context=Context(epoch=2)),
        Text("note", "hello", 4, origin=site),
        Scalar("loss", 9.0, 5, wall_time=1.0e9, origin=rank),
        Metrics({"b": 1.0}, 6, wall_time=1.0e9),
    ]
    body = entry_fields("p1", 1, events)["d"]
    assert isinstance(body, bytes)
    decoded = wire.decode(body)
    assert decoded == events
    assert len(body) * 2 < len(wire.encode_events(events))
    assert len({id(e.origin) for e in decoded if e.origin == rank}) == 1
