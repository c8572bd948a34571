"""`bus.metric_items`: the (name, value) pairs of an event, as a sink of your own reads them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar, Literal

import pytest

from bus import Event, Histogram, Hparams, MetricBus, Metrics, Origin, RunConfig, Scalar, Sink, Text, metric_items


def test_a_scalar_is_one_pair_and_a_metrics_its_values_in_logged_order() -> None:
    assert list(metric_items(Scalar("loss", 0.25, 3))) == [("loss", 0.25)]
    values = {"b": 2.0, "a": 1.0, "c": math.inf}
    assert list(metric_items(Metrics(values, 3))) == [("b", 2.0), ("a", 1.0), ("c", math.inf)]
    assert math.isnan(next(iter(metric_items(Scalar("x", math.nan, 0))))[1])


@pytest.mark.parametrize(
    "event",
    [
        Metrics({}, 0),
        Histogram("h", 0, values=(1.0, 2.0)),
        Text("t", "hello", 0),
        Hparams({"lr": 0.1}, metrics={"acc": 0.9}),  # a run's result, not a point of a series
        RunConfig({"lr": 0.1}),
    ],
)
def test_every_other_event_carries_no_pairs(event: Event) -> None:
    items = metric_items(event)
    assert not items and len(items) == 0 and list(items) == []


class _Points(Sink):
    """A sink of one's own that writes (origin, step, name, value) points."""

    isolation: ClassVar[Literal["none", "host", "process"]] = "none"  # the test reads its points

    def __init__(self) -> None:
        self.points: list[tuple[str, int, str, float]] = []

    @property
    def name(self) -> str:
        return "points"

    async def write_batch(self, events: Sequence[Event]) -> None:
        for event in events:
            self.points += [(event.origin.label, event.step, name, value) for name, value in metric_items(event)]


@pytest.mark.anyio
async def test_a_sink_of_ones_own_gets_every_value_of_a_mixed_run() -> None:
    sink = _Points()
    async with MetricBus() as bus:
        bus.add_sink(sink)
        await bus.publish(Scalar("loss", 1.0, 0, origin=Origin(rank=1)))
        await bus.publish(Text("note", "start", 0))
        await bus.publish(Metrics({"loss": 0.5, "acc": 0.75}, 1))
    assert sink.points == [("rank1", 0, "loss", 1.0), ("main", 1, "loss", 0.5), ("main", 1, "acc", 0.75)]
