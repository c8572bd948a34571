"""MetricLogger: the sync front door, a thin bridge onto the same bus."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from bus import BusClosed, DeliveryError, InvalidEvent, Metrics, RetryPolicy, Scalar, StopTraining
from producers import MetricLogger
from sinks import MemorySink
from tests.helpers import BrokenSink, GatedSink, wait_until_sync


def test_logged_values_reach_the_sinks_with_their_steps() -> None:
    sink = MemorySink()
    with MetricLogger(sinks=[sink]) as log:
        for step in range(100):
            log.scalars({"loss": 1.0 / (step + 1), "lr": 0.1}, step=step)
            log.scalar("grad_norm", np.float32(0.5), step=np.int64(step))  # type: ignore[arg-type]
        log.flush()
        assert sink.values("loss") == [(s, 1.0 / (s + 1)) for s in range(100)]
        stats = log.stats()["memory"]
        assert stats.published == stats.delivered == 200 and stats.balanced
    assert sink.values("grad_norm") == [(s, 0.5) for s in range(100)]
    assert sink.closed


def test_many_threads_keep_their_own_order() -> None:
    sink = MemorySink()
    threads, per_thread = 8, 20_000

    def work(log: MetricLogger, t: int) -> None:
        for i in range(per_thread):
            log.scalar(f"t{t}", float(i), step=i)

    with MetricLogger(sinks=[sink]) as log:
        workers = [threading.Thread(target=work, args=(log, t)) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    for t in range(threads):
        assert [s for s, _ in sink.values(f"t{t}")] == list(range(per_thread))


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda log: log.scalar("", 1.0, step=0), "name"),
        (lambda log: log.scalar("x", "1.0", step=0), "value"),
        (lambda log: log.scalar("x", 1.0, step=-3), "step"),
        (lambda log: log.scalars({"a": [1, 2]}, step=0), "values['a']"),
        (lambda log: log.scalars({"": 1.0}, step=0), "values key"),
        (lambda log: log.text("t", b"bytes", step=0), "text"),
    ],
)
def test_bad_input_raises_at_the_logging_call_and_nothing_reaches_the_sinks(call: object, field: str) -> None:
    sink = MemorySink()
    with MetricLogger(sinks=[sink]) as log:
        with pytest.raises(InvalidEvent) as info:
            call(log)  # type: ignore[operator]
        assert info.value.field == field
        log.scalar("ok", 1.0, step=0)
    assert [e.name for e in sink.events] == ["ok"]  # type: ignore[union-attr]


def test_nan_and_inf_are_legal_values_and_stay_what_they_are() -> None:
    sink = MemorySink()
    with MetricLogger(sinks=[sink]) as log:
        log.scalars({"nan": float("nan"), "inf": float("inf"), "ninf": -np.inf}, step=0)
    (event,) = sink.events
    assert isinstance(event, Metrics)
    assert np.isnan(event.values["nan"]) and event.values["inf"] == np.inf and event.values["ninf"] == -np.inf


def test_a_stuck_block_sink_costs_the_loop_one_block_timeout_then_nothing_is_lost() -> None:
    gated = GatedSink()
    # pending_limit is checked each time a batch ships (every poll_interval): a short one, so
    # that these 10,000 calls (a few ms) cross it
    log = MetricLogger(pending_limit=50, block_timeout=0.2, poll_interval=0.00002)
    log.add_sink(gated, capacity=10, max_batch=5, max_interval=0.001)
    for i in range(10_000):  # waits 0.2 s once, then goes on: the overflow is kept, not dropped
        log.scalar("x", float(i), step=i)
    assert gated.entered.is_set()
    stuck = log.stats()["gated"]
    assert stuck.dropped == {} and stuck.balanced and stuck.published == 10_000
    gated.gate.set()
    log.scalar("after", 1.0, step=0)
    log.close()  # no DeliveryError: every event arrived
    assert [e.step for e in gated.events[:-1]] == list(range(10_000))  # type: ignore[union-attr]
    assert gated.events[-1].name == "after"  # type: ignore[union-attr]
    final = log.stats()["gated"]
    assert final.published == 10_001 == final.delivered and final.balanced


def test_with_only_drop_policy_sinks_logging_never_blocks() -> None:
    gated = GatedSink()
    log = MetricLogger(pending_limit=50, block_timeout=0.01, poll_interval=0.0002)
    log.add_sink(gated, capacity=10, max_batch=5, when_full="drop_newest")
    for i in range(20_000):  # would raise BusFull if it ever blocked for 10 ms
        log.scalar("x", float(i), step=i)
    stats = log.stats()["gated"]
    assert stats.dropped.get("full", 0) > 0 and stats.balanced
    gated.gate.set()
    log.close()
    final = log.stats()["gated"]
    # what the logger dropped before the bus is in the sink's counters too, so they balance
    assert final.published == 20_000 and final.balanced and 0 < log.dropped_before_bus <= final.dropped["full"]


def test_request_stop_raises_stop_training_at_the_next_call_and_keeps_its_event() -> None:
    sink = MemorySink()
    with MetricLogger(sinks=[sink]) as log:
        log.scalar("loss", 1.0, step=0)
        log.request_stop("loss is NaN")
        with pytest.raises(StopTraining, match="loss is NaN"):
            log.scalar("loss", 2.0, step=1)
        log.scalar("loss", 3.0, step=2)  # raised once; logging goes on if the user wants
    assert sink.values("loss") == [(0, 1.0), (1, 2.0), (2, 3.0)]


def test_close_reports_a_failed_sink_and_logging_after_close_is_an_error() -> None:
    good = MemorySink()
    log = MetricLogger(sinks=[good])
    log.add_sink(BrokenSink(), retry=RetryPolicy(max_attempts=2, backoff=0.001))
    log.scalar("x", 1.0, step=0)
    with pytest.raises(DeliveryError, match="broken"):
        log.close()
    assert good.values("x") == [(0, 1.0)]
    with pytest.raises(BusClosed):
        log.scalar("x", 2.0, step=1)
    log.close()  # idempotent


def test_events_published_directly_keep_their_own_origin() -> None:
    from bus import Origin

    sink = MemorySink()
    with MetricLogger(sinks=[sink], origin=Origin(site="site-1")) as log:
        log.scalar("a", 1.0, step=0)
        log.publish(Scalar("b", 2.0, step=0, origin=Origin(site="site-2")))
    assert [e.origin.label for e in sink.events] == ["site-1", "site-2"]


def test_stats_drain_pending_events_so_counters_always_balance() -> None:
    gated = GatedSink()
    with MetricLogger() as log:
        log.add_sink(gated, max_interval=0.001)
        for i in range(1_000):
            log.scalar("x", float(i), step=i)
        wait_until_sync(gated.entered.is_set)
        stats = log.stats()["gated"]
        assert stats.published == 1_000 and stats.balanced and stats.delivered == 0
        gated.gate.set()
