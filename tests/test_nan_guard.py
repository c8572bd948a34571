"""NanGuard: a NaN stops the loop at its next logging call; the NaN itself is still written."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bus import Metrics, StopTraining
from producers import MetricLogger, NanGuard
from sinks import JsonlSink, read_jsonl
from tests.helpers import wait_until_sync


def test_the_loop_stops_at_the_next_call_and_the_nan_reaches_the_file(tmp_path: Path) -> None:
    log = MetricLogger(sinks=[JsonlSink(tmp_path / "m.jsonl")])
    guard = NanGuard.attach(log, watch=["loss"])
    losses = [1.0, 0.5, math.nan, 0.25, 0.1]
    stopped_at = None
    with log:
        step = 0
        with pytest.raises(StopTraining, match="loss became nan at step 2"):
            while True:
                log.scalars({"loss": losses[min(step, 4)], "acc": float(step)}, step=step)
                if step == 2:
                    wait_until_sync(lambda: guard.tripped is not None)  # the guard runs on the bus thread
                step += 1
        stopped_at = step
    assert stopped_at == 3  # the call after the NaN raised; its own event was queued first
    events = read_jsonl(tmp_path / "m.jsonl")
    assert all(isinstance(e, Metrics) for e in events)
    assert [e.step for e in events] == [0, 1, 2, 3]
    nan_event = events[2]
    assert isinstance(nan_event, Metrics) and math.isnan(nan_event.values["loss"])


def test_unwatched_metrics_do_not_trip_it_and_a_callback_can_replace_the_exception() -> None:
    reasons: list[str] = []
    with MetricLogger() as log:
        log.add_sink(NanGuard(reasons.append, watch=["loss"]))
        log.scalar("grad_norm", math.inf, step=0)  # not watched
        log.scalar("loss", -math.inf, step=1)
        log.flush()
        log.scalar("loss", 1.0, step=2)  # no exception: the callback decided
        log.scalar("loss", math.nan, step=3)
        log.flush()
    assert reasons == ["loss became -inf at step 1"]  # once: it does not fire again


def test_watching_everything_catches_any_metric() -> None:
    reasons: list[str] = []
    with MetricLogger() as log:
        log.add_sink(NanGuard(reasons.append))
        log.scalars({"a": 1.0, "b": math.nan}, step=4)
        log.flush()
    assert reasons == ["b became nan at step 4"]
