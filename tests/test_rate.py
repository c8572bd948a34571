"""Per-sink rate control: a sink that wants fewer rows gets reduced ones; the others every event."""

from __future__ import annotations

import math
import time

import hypothesis.strategies as st
import msgspec
import pytest
from hypothesis import given

from bus import InvalidConfig, MetricBus, Metrics, Origin, RateLimit, Scalar, Text
from bus._rate import Reducer
from sinks import MemorySink
from tests.helpers import wait_until

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000.0


def rows(sink: MemorySink) -> list[tuple[int, dict[str, float]]]:
    return [(e.step, dict(e.values)) for e in sink.events if type(e) is Metrics]


async def test_every_k_steps_one_row_per_window_with_the_mean_and_the_other_sink_gets_every_step() -> None:
    every, reduced = MemorySink("all"), MemorySink("reduced")
    async with MetricBus() as bus:
        bus.add_sink(every)
        bus.add_sink(reduced, rate=RateLimit(every=10, reduce="mean"))
        for step in range(100):
            await bus.publish(Metrics({"loss": float(step), "acc": 2.0 * step}, step, wall_time=T0 + step))
    assert len(every.events) == 100
    expected = [(s + 9, {"loss": s + 4.5, "acc": 2 * s + 9.0}) for s in range(0, 100, 10)]
    assert rows(reduced) == expected
    stats = bus.stats()["reduced"]
    assert stats.delivered == 10 and stats.reduced == 90 and stats.dropped == {} and stats.balanced


@pytest.mark.parametrize(("reduce", "pick"), [("last", lambda xs: xs[-1]), ("min", min), ("max", max)])
async def test_per_second_windows_of_wall_time_reduce_each_metric(reduce: str, pick: object) -> None:
    sink = MemorySink()
    values = [math.sin(i) for i in range(1_000)]
    async with MetricBus() as bus:
        bus.add_sink(sink, rate=RateLimit(per_second=10, reduce=reduce))  # type: ignore[arg-type]
        # 1,000 steps at 1 kHz: one second of training, keyed by the events' own wall times
        await bus.publish_many([Scalar("x", v, step=i, wall_time=T0 + (i + 0.5) / 1_000) for i, v in enumerate(values)])
    got = rows(sink)
    assert len(got) == 10 and [step for step, _ in got] == [i * 100 + 99 for i in range(10)]
    for n, (_, row) in enumerate(got):
        assert row["x"] == pick(values[n * 100 : (n + 1) * 100])  # type: ignore[operator]
    assert bus.stats()["memory"].reduced == 990


async def test_origins_are_reduced_apart_other_kinds_pass_and_flush_releases_the_open_rows() -> None:
    sink = MemorySink()
    async with MetricBus() as bus:
        bus.add_sink(sink, rate=RateLimit(every=1_000))
        for step in range(5):
            for site in ("a", "b"):
                await bus.publish(Scalar("loss", float(step), step, wall_time=T0, origin=Origin(site=site)))
        await bus.publish(Text("note", "kept as is", 4, wall_time=T0))
        await bus.flush()  # the windows are still open: a flush writes them out
        by_site = {e.origin.site: (e.step, e.values) for e in sink.events if type(e) is Metrics}
        assert by_site == {"a": (4, {"loss": 4.0}), "b": (4, {"loss": 4.0})}
        assert [e.text for e in sink.events if type(e) is Text] == ["kept as is"]
        stats = bus.stats()["memory"]
        assert stats.reduced == 8 and stats.delivered == 3 and stats.balanced


async def test_an_open_time_window_is_written_once_it_ends_without_a_flush() -> None:
    sink = MemorySink()
    async with MetricBus() as bus:
        bus.add_sink(sink, rate=RateLimit(per_second=20), max_interval=0.05)
        await bus.publish(Scalar("x", 1.0, step=0))  # wall time now: its window ends within 50 ms
        await wait_until(lambda: len(sink.events) == 1)
        assert time.time() - sink.events[0].wall_time < 5
    assert bus.stats()["memory"].delivered == 1


async def test_nan_is_kept_by_the_mean_and_skipped_by_min_and_max_unless_alone() -> None:
    results = {}
    for reduce in ("mean", "min", "max"):
        sink = MemorySink(reduce)
        async with MetricBus() as bus:
            bus.add_sink(sink, rate=RateLimit(every=3, reduce=reduce))  # type: ignore[arg-type]
            for step, v in enumerate([1.0, math.nan, 3.0, math.nan, math.nan, math.nan]):
                await bus.publish(Scalar("x", v, step, wall_time=T0))
        results[reduce] = [row["x"] for _, row in rows(sink)]
    assert math.isnan(results["mean"][0]) and math.isnan(results["mean"][1])
    assert results["min"][0] == 1.0 and results["max"][0] == 3.0
    assert math.isnan(results["min"][1]) and math.isnan(results["max"][1])


def test_a_rate_limit_takes_exactly_one_window_kind() -> None:
    for bad in (
        {},
        {"per_second": 1.0, "every": 2},
        {"per_second": 0.0},
        {"every": 0},
        {"every": 1, "reduce": "median"},
    ):
        with pytest.raises(InvalidConfig):
            RateLimit(**bad)  # type: ignore[arg-type]


# ---- a value never moves to another step ----


async def test_a_step_that_goes_backwards_closes_the_window() -> None:
    sink = MemorySink()
    steps = [10, 5, 7, 5, 12]  # all in one wall-time window
    async with MetricBus() as bus:
        bus.add_sink(sink, rate=RateLimit(per_second=10, reduce="mean"))
        await bus.publish_many([Scalar("x", float(i), step=s, wall_time=T0) for i, s in enumerate(steps)])
    # windows [10], [5, 7], [5, 12]: each row at a step of its own window, never a value of step 10 at 12
    assert rows(sink) == [(10, {"x": 0.0}), (7, {"x": 1.5}), (12, {"x": 3.5})]
    stats = bus.stats()["memory"]
    assert stats.delivered == 3 and stats.reduced == 2 and stats.balanced


async def test_a_metric_logged_once_in_a_window_keeps_its_own_step() -> None:
    sink = MemorySink()
    async with MetricBus() as bus:
        bus.add_sink(sink, rate=RateLimit(every=10, reduce="mean"))
        for step in range(20):
            await bus.publish(Scalar("loss", float(step), step, wall_time=T0 + step))
            if step % 10 == 5:  # an eval every 10 steps, in the middle of each window
                await bus.publish(Metrics({"val/acc": step / 100, "val/loss": step / 10}, step, wall_time=T0 + step))
    assert rows(sink) == [
        (5, {"val/acc": 0.05, "val/loss": 0.5}),
        (9, {"loss": 4.5}),
        (15, {"val/acc": 0.15, "val/loss": 1.5}),
        (19, {"loss": 14.5}),
    ]
    assert [e.wall_time for e in sink.events] == [T0 + 5, T0 + 9, T0 + 15, T0 + 19]
    stats = bus.stats()["memory"]
    assert stats.published == 22 and stats.delivered == 4 and stats.reduced == 18 and stats.balanced


logged = st.lists(
    st.tuples(st.integers(0, 30), st.sets(st.sampled_from("abc"), min_size=1), st.floats(0, 3)), max_size=60
)


@given(logged, st.sampled_from(["last", "mean", "min", "max"]), st.sampled_from([{"every": 4}, {"per_second": 1.0}]))
def test_every_row_value_sits_at_a_step_its_metric_was_logged_at(
    calls: list[tuple[int, set[str], float]], reduce: str, window: dict[str, float]
) -> None:
    """Whatever the order of steps: a row's value for a metric is at a step that metric was logged
    at; with `last`, it is the value logged last there; every event is delivered or reduced."""
    events = [
        Metrics({name: step + offset / 4 for name in names}, step, wall_time=T0 + offset)
        for step, names, offset in calls
    ]
    reducer = Reducer(RateLimit(reduce=reduce, **window))  # type: ignore[arg-type]
    out = [row for event in events for row in reducer.add(event)] + reducer.drain()
    assert reducer.held == 0 and len(out) + reducer.reduced == len(events)
    logged_at = {(name, step) for step, names, _ in calls for name in names}
    for row in out:
        assert isinstance(row, Metrics)
        for name, value in row.values.items():
            assert (name, row.step) in logged_at
            if reduce == "last":
                assert math.floor(value) == row.step  # the value logged at that step, not another's


_ORIGINS = [Origin(), Origin(rank=1)]


@st.composite
def _batches(draw: st.DrawFn) -> list[Scalar | Metrics]:
    """Events of two origins (each one object, as in a decoded batch), steps mostly rising."""
    events: list[Scalar | Metrics] = []
    step, t = 0, T0
    for _ in range(draw(st.integers(1, 60))):
        step = max(0, step + draw(st.sampled_from([0, 0, 1, 1, 2, 7, -3])))
        t += draw(st.sampled_from([0.0, 0.01, 0.3, 1.1]))
        origin = draw(st.sampled_from(_ORIGINS))
        value = draw(st.floats(allow_nan=True, allow_infinity=False, width=32))
        if draw(st.booleans()):
            events.append(Scalar(draw(st.sampled_from("ab")), value, step, wall_time=t, origin=origin))
        else:
            events.append(Metrics({"a": value, "c": -value}, step, wall_time=t, origin=origin))
    return events


@given(
    _batches(),
    st.sampled_from([RateLimit(every=3), RateLimit(per_second=2.0)]),
    st.sampled_from(["last", "mean", "min", "max"]),
)
def test_a_batch_folds_into_the_same_rows_as_its_events_one_at_a_time(
    events: list[Scalar | Metrics], limit: RateLimit, reduce: str
) -> None:
    """add_many has an inline path for a run of Scalars of one origin; it must agree with the
    general path that each event takes alone."""
    limit = RateLimit(every=limit.every, per_second=limit.per_second, reduce=reduce)  # type: ignore[arg-type]
    batch, single = Reducer(limit), Reducer(limit)
    together = batch.add_many(events) + batch.drain()
    alone = [row for event in events for row in single.add(event)] + single.drain()
    assert [msgspec.msgpack.encode(e) for e in together] == [msgspec.msgpack.encode(e) for e in alone]  # NaN too
    assert batch.reduced == single.reduced
