"""What the bus does when a sink misbehaves: poison events, broken sinks, wrong results, hangs."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import anyio
import pytest

from bus import DeliveryError, Event, MetricBus, RetryPolicy, Scalar, Sink, SinkAlreadyAdded, SinkState
from producers import MetricLogger
from sinks import JsonlSink, MemorySink, read_jsonl
from tests.helpers import BrokenSink, GatedSink, wait_until

pytestmark = pytest.mark.anyio

FAST_RETRY = RetryPolicy(max_attempts=3, backoff=0.001, max_backoff=0.002)


class PoisonSink(Sink):
    """Stores batches, but fails any batch holding a value it cannot take (a user's sink bug)."""

    def __init__(self, poison: float) -> None:
        self.poison = poison
        self.events: list[Event] = []

    async def write_batch(self, events: Sequence[Event]) -> None:
        if any(type(e) is Scalar and e.value == self.poison for e in events):
            raise ValueError(f"cannot encode {self.poison}")
        self.events.extend(events)


class Returns(Sink):
    """write_batch returns a fixed (wrong) result."""

    def __init__(self, result: object) -> None:
        self.result = result

    async def write_batch(self, events: Sequence[Event]) -> int | None:
        return self.result  # type: ignore[return-value]


class Hangs(Sink):
    """Blocks its thread forever in one method, as a dead NFS mount does."""

    def __init__(self, method: str) -> None:
        self.method = method
        self.entered = threading.Event()
        self.events: list[Event] = []

    def _maybe_hang(self, method: str) -> None:
        if method == self.method:
            self.entered.set()
            threading.Event().wait()

    async def open(self) -> None:
        self._maybe_hang("open")

    async def write_batch(self, events: Sequence[Event]) -> None:
        self._maybe_hang("write_batch")
        self.events.extend(events)

    async def flush(self) -> None:
        self._maybe_hang("flush")

    async def close(self) -> None:
        self._maybe_hang("close")


def scalars(start: int, n: int) -> list[Scalar]:
    return [Scalar("x", float(i), step=i) for i in range(start, start + n)]


async def test_one_poison_event_in_a_batch_is_rejected_alone_and_the_rest_delivered() -> None:
    sink = PoisonSink(poison=-1.0)
    events = [*scalars(0, 500), Scalar("x", -1.0, step=500), *scalars(501, 499)]
    with pytest.raises(DeliveryError, match="rejected"):
        async with MetricBus() as bus:
            bus.add_sink(sink, retry=FAST_RETRY, max_batch=1_000, max_interval=3600)
            await bus.publish_many(events)  # one batch of 1,000 holding the poison
            await bus.publish_many(scalars(1_000, 1_000))  # and 1,000 good ones after it
    stats = bus.stats()["PoisonSink"]
    assert stats.dropped == {"rejected": 1} and stats.delivered == 1_999 and stats.balanced
    assert "cannot encode -1.0" in (stats.last_error or "") and stats.state is SinkState.CLOSED
    assert sorted(e.step for e in sink.events) == [s for s in range(2_000) if s != 500]


async def test_a_lone_poison_event_is_rejected_once_the_sink_is_known_to_work() -> None:
    sink = PoisonSink(poison=-1.0)
    with pytest.raises(DeliveryError):
        async with MetricBus() as bus:
            bus.add_sink(sink, retry=FAST_RETRY)
            for event in [*scalars(0, 3), Scalar("x", -1.0, step=3), *scalars(4, 3)]:
                await bus.publish(event)
                await bus.flush()  # batches of one
    assert bus.stats()["PoisonSink"].dropped == {"rejected": 1}
    assert [e.step for e in sink.events] == [0, 1, 2, 4, 5, 6]


async def test_a_sink_that_fails_everything_is_failed_not_turned_into_rejects() -> None:
    start = time.monotonic()
    with pytest.raises(DeliveryError, match="remote is down"):
        async with MetricBus() as bus:
            bus.add_sink(BrokenSink(), retry=FAST_RETRY, max_batch=1_000, max_interval=3600)
            await bus.publish_many(scalars(0, 1_000))
            await bus.publish_many(scalars(1_000, 500))
    stats = bus.stats()["broken"]
    assert stats.state is SinkState.FAILED and stats.dropped == {"sink_failed": 1_500} and stats.balanced
    assert time.monotonic() - start < 5  # bisection gives up after a bounded number of failures


@pytest.mark.parametrize("result", [False, True, -5, 10**6, "3", 2.0])
async def test_a_wrong_write_batch_result_is_a_typed_error_and_counters_balance(result: object) -> None:
    with pytest.raises(DeliveryError, match="InvalidSinkResult"):
        async with MetricBus() as bus:
            bus.add_sink(Returns(result), retry=FAST_RETRY)
            await bus.publish_many(scalars(0, 1_000))
    stats = bus.stats()["Returns"]
    assert stats.balanced and stats.delivered == 0 and stats.state is SinkState.FAILED
    assert stats.dropped == {"sink_failed": 1_000}


async def test_a_refused_count_within_the_batch_is_counted_as_rejected() -> None:
    async with MetricBus(raise_on_loss=False) as bus:
        bus.add_sink(Returns(3))
        await bus.publish_many(scalars(0, 10))
    stats = bus.stats()["Returns"]
    assert stats.delivered == 7 and stats.dropped == {"rejected": 3} and stats.balanced


@pytest.mark.parametrize("method", ["open", "write_batch", "flush"])
async def test_a_sink_hung_in_a_blocking_call_is_failed_at_call_timeout_and_others_go_on(
    method: str,
) -> None:
    hung, healthy = Hangs(method), MemorySink()
    with anyio.fail_after(10), pytest.raises(DeliveryError, match=f"{method} did not return"):
        async with MetricBus() as bus:
            bus.add_sink(hung, call_timeout=0.3, max_interval=0.01)
            bus.add_sink(healthy)
            await bus.publish_many(scalars(0, 100))
            await bus.flush()  # bounded: the hung sink is failed at its call_timeout
            assert len(healthy.events) == 100
    stats = bus.stats()["Hangs"]
    assert stats.state is SinkState.FAILED and stats.balanced
    assert stats.delivered + stats.dropped.get("sink_failed", 0) == 100
    assert stats.delivered == (100 if method == "flush" else 0)


async def test_a_sink_hung_in_close_is_abandoned_at_the_shutdown_deadline_and_reported_failed() -> None:
    hung = Hangs("close")
    start = time.monotonic()
    with pytest.raises(DeliveryError, match="close did not return within the shutdown timeout"):
        async with MetricBus(shutdown_timeout=0.5) as bus:
            bus.add_sink(hung)
            await bus.publish_many(scalars(0, 10))
    assert time.monotonic() - start < 1.5
    stats = bus.stats()["Hangs"]
    assert stats.state is SinkState.FAILED and stats.delivered == 10 and stats.balanced


async def test_flush_with_a_timeout_raises_timeout_error_and_leaves_the_events_queued() -> None:
    gated = GatedSink()
    async with MetricBus(raise_on_loss=False, shutdown_timeout=0.5) as bus:
        bus.add_sink(gated)
        await bus.publish_many(scalars(0, 10))
        await wait_until(gated.entered.is_set)
        with pytest.raises(TimeoutError):
            await bus.flush(timeout=0.1)
        stats = bus.stats()["gated"]
        assert stats.in_flight == 10 and stats.balanced
        gated.gate.set()
        await bus.flush(timeout=5)
    assert bus.stats()["gated"].delivered == 10


def test_one_sink_object_on_two_open_loggers_is_refused_and_free_again_once_closed(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "m.jsonl"
    sink = JsonlSink(path)
    first = MetricLogger(sinks=[sink])
    with pytest.raises(SinkAlreadyAdded, match="another open bus"):
        MetricLogger(sinks=[sink])
    first.scalar("x", 1.0, step=0)
    first.close()
    with MetricLogger(sinks=[sink]) as second:  # the first one is closed: the sink is free
        second.scalar("x", 2.0, step=1)
    assert [e.step for e in read_jsonl(path)] == [0, 1]  # type: ignore[union-attr]
