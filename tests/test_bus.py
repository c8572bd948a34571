"""MetricBus behaviour a user relies on: delivery, order, backpressure, drops, failures, shutdown."""

from __future__ import annotations

import anyio
import pytest

from bus import (
    BusClosed,
    BusFull,
    BusStateError,
    DeliveryError,
    InvalidConfig,
    InvalidEvent,
    MetricBus,
    Metrics,
    RetryPolicy,
    Scalar,
    SinkAlreadyAdded,
    SinkState,
    Text,
)
from sinks import CsvSink, MemorySink
from tests.helpers import BrokenSink, FlakySink, GatedSink, HangingSink, wait_until

pytestmark = pytest.mark.anyio

FAST_RETRY = RetryPolicy(max_attempts=3, backoff=0.001, max_backoff=0.002)


async def test_eight_concurrent_producers_all_delivered_in_order_and_counters_balance() -> None:
    producers, per_producer = 8, 100_000
    fast, small_batches = MemorySink("fast"), MemorySink("small")
    events = {p: [Scalar(f"p{p}", float(i), step=i) for i in range(per_producer)] for p in range(producers)}
    imbalances: list[object] = []

    async def produce(p: int, bus: MetricBus) -> None:
        if p % 2:  # half publish one at a time, half in batches
            for event in events[p]:
                await bus.publish(event)
        else:
            for i in range(0, per_producer, 5_000):
                await bus.publish_many(events[p][i : i + 5_000])

    async def audit(bus: MetricBus, done: anyio.Event) -> None:
        while not done.is_set():
            imbalances.extend(s for s in bus.stats().values() if not s.balanced)
            await anyio.sleep(0.005)

    async with MetricBus() as bus:
        bus.add_sink(fast, capacity=50_000)
        bus.add_sink(small_batches, capacity=1_000, max_batch=64)
        done = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(audit, bus, done)
            async with anyio.create_task_group() as workers:
                for p in range(producers):
                    workers.start_soon(produce, p, bus)
            done.set()

    assert imbalances == []
    for sink in (fast, small_batches):
        for p in range(producers):
            assert [e.step for e in sink.events if e.name == f"p{p}"] == list(range(per_producer))  # type: ignore[union-attr]
    for stats in bus.stats().values():
        assert stats.published == stats.delivered == producers * per_producer
        assert stats.dropped == {} and stats.balanced
    assert max(small_batches.batches) <= 64


async def test_block_policy_makes_the_publisher_wait_until_the_sink_takes_events() -> None:
    sink = GatedSink()
    published = 0

    async def publisher(bus: MetricBus) -> None:
        nonlocal published
        for i in range(30):
            await bus.publish(Scalar("x", float(i), step=i))
            published += 1

    async with MetricBus() as bus:
        bus.add_sink(sink, capacity=10, max_batch=5, max_interval=0.001)
        async with anyio.create_task_group() as tg:
            tg.start_soon(publisher, bus)
            await wait_until(sink.entered.is_set)
            await wait_until(lambda: bus.stats()["gated"].queued == 10)
            for _ in range(20):  # the publisher gets every chance to run: it must stay blocked
                await anyio.lowlevel.checkpoint()
            in_flight = bus.stats()["gated"].in_flight
            assert published == 10 + in_flight
            with pytest.raises(BusFull):
                bus.publish_nowait(Scalar("y", 0.0, step=0))
            sink.gate.set()
    assert [e.step for e in sink.events] == list(range(30))  # type: ignore[union-attr]
    assert bus.stats()["gated"].dropped == {}


@pytest.mark.parametrize(
    ("policy", "kept"),
    [("drop_oldest", list(range(15, 20))), ("drop_newest", list(range(1, 6)))],
)
async def test_drop_policies_drop_the_right_events_and_count_them(policy: str, kept: list[int]) -> None:
    sink = GatedSink()
    async with MetricBus() as bus:
        bus.add_sink(sink, capacity=5, max_batch=1, max_interval=0.001, when_full=policy)  # type: ignore[arg-type]
        await bus.publish(Scalar("x", 0.0, step=0))
        await wait_until(sink.entered.is_set)  # step 0 is in flight, the buffer is empty
        for i in range(1, 20):
            await bus.publish(Scalar("x", float(i), step=i))  # never waits under a drop policy
        stats = bus.stats()["gated"]
        assert stats.dropped == {"full": 14} and stats.queued == 5 and stats.balanced
        sink.gate.set()
    assert [e.step for e in sink.events] == [0, *kept]  # type: ignore[union-attr]
    final = bus.stats()["gated"]
    assert final.delivered == 6 and final.dropped == {"full": 14} and final.balanced


async def test_drop_policies_apply_to_batches_too() -> None:
    oldest, newest = GatedSink("oldest"), GatedSink("newest")
    async with MetricBus() as bus:
        bus.add_sink(oldest, capacity=10, max_batch=1, when_full="drop_oldest")
        bus.add_sink(newest, capacity=10, max_batch=1, when_full="drop_newest")
        await bus.publish(Scalar("x", 0.0, step=0))
        await wait_until(oldest.entered.is_set)
        await wait_until(newest.entered.is_set)
        await bus.publish_many([Scalar("x", float(i), step=i) for i in range(1, 26)])
        oldest.gate.set()
        newest.gate.set()
    assert [e.step for e in oldest.events] == [0, *range(16, 26)]  # type: ignore[union-attr]
    assert [e.step for e in newest.events] == [0, *range(1, 11)]  # type: ignore[union-attr]
    assert bus.stats()["oldest"].dropped == bus.stats()["newest"].dropped == {"full": 15}


async def test_leaving_the_context_drains_everything_without_waiting_for_the_interval() -> None:
    sink = MemorySink()
    with anyio.fail_after(10):  # the interval is an hour: only draining on close can finish in time
        async with MetricBus() as bus:
            bus.add_sink(sink, max_batch=100_000, max_interval=3600)
            for i in range(1_000):
                await bus.publish(Scalar("x", float(i), step=i))
            assert sink.events == []
    assert len(sink.events) == 1_000 and sink.closed


async def test_flush_returns_once_everything_published_before_it_is_written() -> None:
    sink = MemorySink()
    async with MetricBus() as bus:
        bus.add_sink(sink, max_batch=100_000, max_interval=3600)
        await bus.publish_many([Scalar("x", float(i), step=i) for i in range(500)])
        await bus.flush()
        assert len(sink.events) == 500 and sink.flushes >= 1


async def test_batches_are_written_after_max_interval_without_a_flush() -> None:
    sink = MemorySink()
    async with MetricBus() as bus:
        bus.add_sink(sink, max_batch=1_000, max_interval=0.02)
        for i in range(3):
            await bus.publish(Scalar("x", float(i), step=i))
        await wait_until(lambda: len(sink.events) == 3)
        assert sink.batches == [3]


async def test_a_sink_that_fails_some_attempts_is_retried_and_loses_nothing() -> None:
    flaky, healthy = FlakySink(failures=2), MemorySink()
    async with MetricBus() as bus:
        bus.add_sink(flaky, retry=FAST_RETRY, max_batch=10)
        bus.add_sink(healthy)
        await bus.publish_many([Scalar("x", float(i), step=i) for i in range(50)])
    assert [e.step for e in flaky.events] == list(range(50))  # type: ignore[union-attr]
    stats = bus.stats()["flaky"]
    assert stats.state is SinkState.CLOSED and stats.delivered == 50 and stats.dropped == {}
    assert stats.failed_attempts == 2 * stats.batches and "disk hiccup" in (stats.last_error or "")


async def test_a_sink_that_keeps_failing_is_isolated_counted_and_reported_at_close() -> None:
    healthy = MemorySink()
    with pytest.raises(DeliveryError) as info:
        async with MetricBus() as bus:
            bus.add_sink(BrokenSink(), retry=FAST_RETRY, max_batch=10)
            bus.add_sink(healthy)
            for i in range(100):
                await bus.publish(Scalar("x", float(i), step=i))  # never raises
            await bus.flush()
            for i in range(100, 120):
                await bus.publish(Scalar("x", float(i), step=i))
    assert len(healthy.events) == 120
    broken = info.value.stats["broken"]
    assert broken.state is SinkState.FAILED and broken.published == 120
    assert broken.dropped == {"sink_failed": 120} and broken.balanced
    assert "remote is down" in str(info.value)


async def test_raise_on_loss_false_keeps_close_quiet_but_stats_still_tell() -> None:
    async with MetricBus(raise_on_loss=False) as bus:
        bus.add_sink(BrokenSink(), retry=FAST_RETRY)
        await bus.publish(Scalar("x", 1.0, step=0))
    assert bus.stats()["broken"].dropped == {"sink_failed": 1}


async def test_a_hanging_sink_does_not_hold_up_others_or_shutdown_beyond_its_timeout() -> None:
    hanging, healthy = HangingSink(), MemorySink()
    with anyio.fail_after(10), pytest.raises(DeliveryError):
        async with MetricBus(shutdown_timeout=0.3) as bus:
            bus.add_sink(hanging, max_batch=10, max_interval=0.001)
            bus.add_sink(healthy, max_interval=0.001)
            await bus.publish_many([Scalar("x", float(i), step=i) for i in range(25)])
            await wait_until(hanging.entered.is_set)
            await wait_until(lambda: len(healthy.events) == 25)
    stats = bus.stats()["hanging"]
    assert stats.dropped == {"shutdown_timeout": 25} and stats.delivered == 0 and stats.balanced
    assert len(healthy.events) == 25


async def test_a_sink_that_cannot_open_drops_its_events_and_others_continue() -> None:
    class NoOpen(MemorySink):
        async def open(self) -> None:
            raise RuntimeError("no such project")  # not an outage (that is an OSError): a failure

    good = MemorySink("good")
    async with MetricBus(raise_on_loss=False) as bus:
        bus.add_sink(NoOpen("noopen"), retry=FAST_RETRY)
        bus.add_sink(good)
        await bus.publish(Scalar("x", 1.0, step=0))
        await bus.flush()
        await bus.publish(Scalar("x", 2.0, step=1))
    assert bus.stats()["noopen"].state is SinkState.FAILED
    assert bus.stats()["noopen"].dropped == {"sink_failed": 2}
    assert len(good.events) == 2


@pytest.mark.parametrize(
    "bad",
    [
        lambda: Scalar("", 1.0, step=0),
        lambda: Scalar(3, 1.0, step=0),  # type: ignore[arg-type]
        lambda: Scalar("x", "1.0", step=0),  # type: ignore[arg-type]
        lambda: Scalar("x", None, step=0),  # type: ignore[arg-type]
        lambda: Scalar("x", 1.0, step=-1),
        lambda: Scalar("x", 1.0, step=1.5),  # type: ignore[arg-type]
        lambda: Scalar("x" * 5_000, 1.0, step=0),
        lambda: Metrics({"a": 1.0, "b": "high"}, step=0),  # type: ignore[dict-item]
        lambda: Metrics([1.0], step=0),  # type: ignore[arg-type]
        lambda: Text("t", "x" * 2_000_000, step=0),
    ],
)
async def test_bad_input_raises_at_the_call_and_the_bus_keeps_working(bad: object) -> None:
    sink = MemorySink()
    async with MetricBus() as bus:
        bus.add_sink(sink)
        with pytest.raises(InvalidEvent):
            await bus.publish(bad())  # type: ignore[operator]
        await bus.publish(Scalar("ok", 1.0, step=0))
    assert [e.name for e in sink.events] == ["ok"]  # type: ignore[union-attr]


async def test_publishing_something_that_is_not_an_event_is_a_typed_error() -> None:
    async with MetricBus() as bus:
        bus.add_sink(MemorySink())
        with pytest.raises(InvalidEvent, match="event"):
            await bus.publish({"loss": 1.0})  # type: ignore[arg-type]
        with pytest.raises(InvalidEvent):
            bus.publish_nowait("loss")  # type: ignore[arg-type]


async def test_lifecycle_misuse_gives_precise_errors() -> None:
    bus = MetricBus()
    sink = MemorySink()
    bus.add_sink(sink)
    with pytest.raises(BusStateError, match="not open"):
        await bus.publish(Scalar("x", 1.0, step=0))
    with pytest.raises(SinkAlreadyAdded):
        bus.add_sink(sink)
    with pytest.raises(SinkAlreadyAdded, match="name="):
        bus.add_sink(MemorySink())  # same default name "memory"
    with pytest.raises(InvalidConfig):
        bus.add_sink(MemorySink("m2"), when_full="drop_everything")  # type: ignore[arg-type]
    with pytest.raises(InvalidConfig):
        bus.add_sink(MemorySink("m3"), capacity=0)
    async with bus:
        pass
    with pytest.raises(BusClosed):
        await bus.publish(Scalar("x", 1.0, step=0))
    with pytest.raises(BusClosed):
        bus.add_sink(MemorySink("late"))
    with pytest.raises(BusStateError):
        async with bus:
            pass


async def test_a_sink_added_while_open_receives_what_is_published_afterwards() -> None:
    early, late = MemorySink("early"), MemorySink("late")
    async with MetricBus() as bus:
        bus.add_sink(early)
        await bus.publish(Scalar("x", 0.0, step=0))
        bus.add_sink(late)
        await bus.publish(Scalar("x", 1.0, step=1))
    assert [e.step for e in early.events] == [0, 1]  # type: ignore[union-attr]
    assert [e.step for e in late.events] == [1]  # type: ignore[union-attr]


async def test_sinks_only_receive_and_count_the_event_types_they_accept(tmp_path: object) -> None:
    async with MetricBus() as bus:
        csv_name = bus.add_sink(CsvSink(f"{tmp_path}/m.csv"))
        bus.add_sink(MemorySink())
        await bus.publish(Text("note", "hello", step=0))
        await bus.publish(Scalar("x", 1.0, step=0))
    assert bus.stats()[csv_name].published == 1
    assert bus.stats()["memory"].published == 2


async def test_producers_run_on_the_bus_and_stop_before_the_sinks_drain() -> None:
    sink = MemorySink()
    ticks = 0

    async def sampler(bus: MetricBus) -> None:
        nonlocal ticks
        while True:
            await bus.publish(Scalar("tick", float(ticks), step=ticks))
            ticks += 1
            await anyio.sleep(0.001)

    async with MetricBus() as bus:
        bus.add_sink(sink)
        bus.add_producer(sampler)
        await wait_until(lambda: ticks >= 5)
    assert len(sink.events) == ticks and bus.stats()["memory"].balanced
