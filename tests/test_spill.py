"""when_full="spill": a full sink's overflow goes to disk and comes back in order; what a failed
or abandoned sink missed is saved there for `metricbus replay`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import anyio
import pytest

from bus import DeliveryError, MetricBus, RetryPolicy, Scalar, SinkState, read_spool
from sinks import JsonlSink, read_jsonl
from tests.helpers import BrokenSink, GatedSink, wait_until, wait_until_sync

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[1]


def scalars(start: int, n: int) -> list[Scalar]:
    return [Scalar("x", float(i), step=i) for i in range(start, start + n)]


async def test_a_full_spill_sink_never_makes_the_publisher_wait_and_gets_everything_in_order(tmp_path: Path) -> None:
    gated = GatedSink()
    async with MetricBus() as bus:
        bus.add_sink(gated, when_full="spill", capacity=100, max_batch=50, spool_dir=str(tmp_path / "spool"))
        for event in scalars(0, 25_000):
            bus.publish_nowait(event)  # never BusFull: the overflow goes to disk
        await wait_until(gated.entered.is_set)
        stats = bus.stats()["gated"]
        assert stats.queued + stats.in_flight == 25_000 and stats.balanced
        # on disk, not in memory: written by a worker thread, off the loop
        await wait_until(lambda: any((tmp_path / "spool").glob("segment-*.msgpack")))
        gated.gate.set()
        await bus.flush()
    assert [e.step for e in gated.events] == list(range(25_000))  # type: ignore[union-attr]
    final = bus.stats()["gated"]
    assert final.delivered == 25_000 and final.dropped == {} and final.balanced
    assert not list((tmp_path / "spool").glob("segment-*"))


async def test_what_a_hung_sink_missed_is_saved_and_the_next_bus_delivers_it_first(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    gated = GatedSink()
    with pytest.raises(DeliveryError, match="saved in"):
        async with MetricBus(shutdown_timeout=0.5) as bus:
            bus.add_sink(gated, when_full="spill", capacity=100, max_batch=50, spool_dir=str(spool), name="s")
            await bus.publish_many(scalars(0, 12_000))
            await wait_until(gated.entered.is_set)
    stats = bus.stats()["s"]
    assert stats.state is SinkState.FAILED and stats.dropped == {"shutdown_timeout": 12_000}
    assert [e.step for e in read_spool(spool)] == list(range(12_000))  # type: ignore[union-attr]

    out = tmp_path / "e.jsonl"
    async with MetricBus() as second:
        second.add_sink(JsonlSink(out), when_full="spill", spool_dir=str(spool), name="s")
        await second.publish_many(scalars(12_000, 100))
    assert [e.step for e in read_jsonl(out)] == list(range(12_100))  # type: ignore[union-attr]
    assert second.stats()["s"].delivered == 12_100 and second.stats()["s"].balanced
    assert not list(spool.glob("segment-*"))


async def test_a_failed_sink_saves_what_it_missed_whatever_its_policy(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    with pytest.raises(DeliveryError, match="metricbus replay"):
        async with MetricBus() as bus:
            bus.add_sink(BrokenSink(), retry=RetryPolicy(max_attempts=2, backoff=0.001), spool_dir=str(spool))
            await bus.publish_many(scalars(0, 300))
    assert bus.stats()["broken"].dropped == {"sink_failed": 300}
    assert [e.step for e in read_spool(spool)] == list(range(300))  # type: ignore[union-attr]


async def test_past_the_spool_limit_the_overflow_is_counted(tmp_path: Path) -> None:
    gated = GatedSink()
    async with MetricBus(raise_on_loss=False, shutdown_timeout=0.5) as bus:
        bus.add_sink(gated, when_full="spill", capacity=10, spool_dir=str(tmp_path / "spool"))
        bus._routes[0].buffer.spool.limit_bytes = 1  # the first events fill it
        for event in scalars(0, 30_000):
            bus.publish_nowait(event)
        stats = bus.stats()["gated"]
        assert stats.dropped["spool_full"] > 0 and stats.balanced
        gated.gate.set()


def test_a_spill_survives_kill_9_and_the_next_run_delivers_it_first(tmp_path: Path) -> None:
    spool, out = tmp_path / "spool", tmp_path / "e.jsonl"
    child = textwrap.dedent(
        f"""
        import sys, threading, time
        from bus import Scalar
        from producers import MetricLogger
        from tests.helpers import GatedSink
        log = MetricLogger()
        log.add_sink(GatedSink(), name="s", when_full="spill", capacity=100, spool_dir={str(spool)!r})
        for step in range(25_000):
            log.scalar("x", float(step), step=step)
        # the sink never answers: everything past its buffer goes to the spool
        while sum(1 for _ in __import__("pathlib").Path({str(spool)!r}).glob("segment-*.msgpack")) < 2:
            time.sleep(0.01)
        print("spilled", flush=True)
        time.sleep(3600)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", child], stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "spilled"
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    on_disk = [e.step for e in read_spool(spool)]  # type: ignore[union-attr]
    assert len(on_disk) >= 20_000 and on_disk == list(range(on_disk[0], on_disk[0] + len(on_disk)))

    from producers import MetricLogger

    with MetricLogger() as log:
        log.add_sink(JsonlSink(out), name="s", when_full="spill", spool_dir=str(spool))
        log.scalar("x", -1.0, step=99_999)
    steps = [e.step for e in read_jsonl(out)]  # type: ignore[union-attr]
    assert steps == [*on_disk, 99_999]  # what survived comes first, then the new run's events
    wait_until_sync(lambda: not list(spool.glob("segment-*")))


async def test_a_saved_spool_replays_into_any_sink_and_stays_where_it_is(tmp_path: Path) -> None:
    from producers import replay

    spool = tmp_path / "spool"
    with pytest.raises(DeliveryError):
        async with MetricBus() as bus:
            bus.add_sink(BrokenSink(), retry=RetryPolicy(max_attempts=1, backoff=0.001), spool_dir=str(spool))
            await bus.publish_many(scalars(0, 500))
    stats = await anyio.to_thread.run_sync(replay, [spool], [JsonlSink(tmp_path / "e.jsonl")])
    assert stats.ok and stats.events == 500
    assert [e.step for e in read_jsonl(tmp_path / "e.jsonl")] == list(range(500))  # type: ignore[union-attr]
    assert [e.step for e in read_spool(spool)] == list(range(500))  # type: ignore[union-attr]
