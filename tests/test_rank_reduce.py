"""RankReducer: the ranks of a job into the job's own series, as numpy would reduce them, with the
missing ranks named, never a hang and never a silent partial mean."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bus import (
    DEFAULT_ORIGIN,
    MISSING_METRIC,
    Histogram,
    InvalidConfig,
    Metrics,
    Origin,
    RankReduce,
    RankReducer,
    RunConfig,
    Scalar,
    declare_reductions,
    missing_lines,
)
from bus._events import Event

NUMPY = {
    "mean": np.mean,
    "sum": np.sum,
    "min": np.min,
    "max": np.max,
    "std": np.std,
    "count": lambda a: float(len(a)),
}


def rows(events: list[Event], origin: Origin = DEFAULT_ORIGIN) -> dict[int, dict[str, float]]:
    """The job's rows by step (the events at `origin`)."""
    out: dict[int, dict[str, float]] = {}
    for event in events:
        if isinstance(event, Metrics) and event.origin == origin:
            out.setdefault(event.step, {}).update(event.values)
    return out


def ranked(rank: int, step: int, values: dict[str, float], site: str = "") -> Metrics:
    return Metrics(values, step, origin=Origin(site=site, rank=rank))


def test_a_step_closes_once_every_rank_moved_on_and_reduces_each_metric_its_way() -> None:
    reducer = RankReducer(RankReduce(world_size=3, metrics={"tokens": "sum", "lr*": "max", "seen": "count"}))
    out = []
    for rank in range(3):
        out += reducer.add_many([ranked(rank, 0, {"loss": float(rank), "tokens": 10.0, "lr/a": rank / 10})])
        out += reducer.add_many([Scalar("seen", 1.0, 0, origin=Origin(rank=rank))])  # a second call, same step
    assert rows(out) == {}  # no rank has moved on: a later call of step 0 may still come
    for rank in range(3):
        out += reducer.add_many([ranked(rank, 1, {"loss": 0.0})])
    assert rows(out) == {0: {"loss": 1.0, "tokens": 30.0, "lr/a": 0.2, "seen": 3.0}}
    assert sum(1 for e in out if e.origin.rank is not None) == 9  # every rank's own series kept
    assert reducer.stats().complete == 1 and reducer.open_steps == 1
    assert rows(reducer.drain()) == {1: {"loss": 0.0}}


def test_without_keep_ranks_only_the_job_series_and_the_unreduced_metrics_go_on() -> None:
    reducer = RankReducer(RankReduce(world_size=2, keep_ranks=False, metrics={"text_len": "none"}))
    out = reducer.add_many([ranked(0, 0, {"loss": 1.0}), ranked(1, 0, {"loss": 3.0}), ranked(1, 0, {"text_len": 7})])
    out += reducer.add_many([Histogram("h", 0, values=(1.0,), origin=Origin(rank=0)), Scalar("x", 1.0, 0)])
    out += reducer.drain()
    kinds = [(type(e).__name__, e.origin.label) for e in out]
    assert kinds == [("Metrics", "rank1"), ("Histogram", "rank0"), ("Scalar", "main"), ("Metrics", "main")]
    assert rows(out) == {0: {"loss": 2.0}}


def test_a_rank_past_the_deadline_is_named_and_not_waited_for_again() -> None:
    reducer = RankReducer(RankReduce(world_size=4, deadline=0.05))
    out = []
    for step in range(3):  # rank 3 dies after step 0
        out += reducer.add_many([ranked(r, step, {"loss": 1.0}) for r in range(4 if step == 0 else 3)])
    assert rows(out) == {}  # step 0 waits for rank 3 to move on, step 1 for rank 3 to come
    deadline = time.monotonic() + 10
    while not rows(out).get(1) and time.monotonic() < deadline:
        time.sleep(0.01)
        out += reducer.expired()
    assert rows(out)[0] == {"loss": 1.0}  # rank 3 did report step 0: it is no partial mean
    assert rows(out)[1] == {"loss": 1.0, MISSING_METRIC: 1.0}
    out += reducer.add_many([ranked(r, 3, {"loss": 1.0}) for r in range(3)])
    assert rows(out)[2] == {"loss": 1.0, MISSING_METRIC: 1.0}  # closed at once: rank 3 is not waited for
    out += reducer.add_many([ranked(r, 4, {"loss": 2.0}) for r in (3, 0, 1, 2)])  # rank 3 is back
    out += reducer.add_many([ranked(r, 5, {"loss": 2.0}) for r in range(4)])
    assert rows(out)[3] == {"loss": 1.0, MISSING_METRIC: 1.0}
    assert rows(out)[4] == {"loss": 2.0, MISSING_METRIC: 0.0}  # found again: the series drops back to 0
    stats = reducer.stats()
    assert (stats.steps, stats.complete, stats.partial) == (5, 2, 3)
    assert stats.missing["rank3"].first_step == 1 and stats.missing["rank3"].last_step == 3
    assert missing_lines(stats) == ["rank 3 missing from step 1 (3 steps, last 3)"]


def test_a_rank_that_leaves_is_done_with_its_step_and_named_from_the_next_on_without_a_deadline() -> None:
    reducer = RankReducer(RankReduce(world_size=3, deadline=3600.0))  # no step may wait for a deadline
    out = reducer.add_many([ranked(r, 0, {"loss": float(r)}) for r in range(3)])
    out += reducer.add_many([ranked(r, 1, {"loss": float(r)}) for r in range(3)])
    assert sorted(rows(out)) == [0]
    out += reducer.leave("", 2)  # rank 2 closed (or died) at step 1: that step is done for it
    out += reducer.add_many([ranked(r, 2, {"loss": 5.0}) for r in range(2)])
    assert rows(out)[1] == {"loss": 1.0}  # rank 2 did report step 1: no partial mean
    out += reducer.leave("", 0) + reducer.leave("", 1)  # the last ranks leave: nothing waits
    assert rows(out)[2] == {"loss": 5.0, MISSING_METRIC: 1.0}
    assert reducer.open_steps == 0 and reducer.stats().missing["rank2"].first_step == 2
    assert reducer.leave("other", 0) == []  # a job never heard of: nothing to do


def test_a_value_for_a_closed_step_is_late_and_kept_as_the_ranks_own() -> None:
    reducer = RankReducer(RankReduce(world_size=2, keep_ranks=False))
    out = reducer.add_many([ranked(0, 0, {"loss": 1.0}), ranked(0, 1, {"loss": 1.0})])
    out += reducer.drain()
    late = ranked(1, 0, {"loss": 5.0})
    assert reducer.add_many([late]) == [late]
    assert reducer.stats().late == 1
    assert rows(out)[0] == {"loss": 1.0, MISSING_METRIC: 1.0}


def test_open_steps_are_bounded_and_what_is_forced_out_is_counted() -> None:
    reducer = RankReducer(RankReduce(world_size=2, max_open_steps=10))
    out = []
    for step in range(100):  # rank 1 never comes, and no deadline passes
        out += reducer.add_many([ranked(0, step, {"loss": float(step)})])
        assert reducer.open_steps <= 10
    stats = reducer.stats()
    assert stats.forced == 1  # the first step forced out: then rank 1 is not waited for
    assert stats.steps == stats.missing["rank1"].steps == 99
    assert rows(out)[0] == {"loss": 0.0, MISSING_METRIC: 1.0}


def test_jobs_are_kept_apart_by_site_and_nodes_do_not_split_a_job() -> None:
    reducer = RankReducer(RankReduce(world_size=2))
    events: list[Event] = [
        Metrics({"x": 1.0}, 0, origin=Origin(site="a", node="node0", rank=0)),
        Metrics({"x": 3.0}, 0, origin=Origin(site="a", node="node1", rank=1)),
        Metrics({"x": 10.0}, 0, origin=Origin(site="b", rank=0)),
        Metrics({"x": 30.0}, 0, origin=Origin(site="b", rank=1)),
    ]
    out = reducer.add_many(events) + reducer.drain()
    assert rows(out, Origin(site="a")) == {0: {"x": 2.0}}
    assert rows(out, Origin(site="b")) == {0: {"x": 20.0}}


def test_reductions_declared_by_the_ranks_come_first_for_their_own_job_and_pass_on() -> None:
    reducer = RankReducer(RankReduce(world_size=2, metrics={"tokens": "max"}))
    declared = declare_reductions({"tokens": "sum", "best": "min"}, origin=Origin(site="a", rank=0))
    out = reducer.add_many([declared])
    assert out == [declared]  # on to the sinks, like any RunConfig
    for site in ("a", "b"):  # job "b" declared nothing: the settings reduce it
        for rank in range(2):
            out += reducer.add_many([ranked(rank, 0, {"tokens": 10.0 + rank, "best": rank + 1.0, "x": rank}, site)])
    out += reducer.drain()
    assert rows(out, Origin(site="a")) == {0: {"tokens": 21.0, "best": 1.0, "x": 0.5}}
    assert rows(out, Origin(site="b")) == {0: {"tokens": 11.0, "best": 1.5, "x": 0.5}}


def test_a_declaration_is_checked_where_it_is_made_and_a_foreign_one_only_where_valid() -> None:
    with pytest.raises(InvalidConfig, match="'x': the reduction must be one of"):
        declare_reductions({"x": "avg"})  # type: ignore[dict-item]
    reducer = RankReducer(RankReduce(world_size=2))
    by_hand = RunConfig({"metricbus/ranks/reduce": {"x": "avg", "y": "sum"}}, origin=Origin(rank=0))
    out = reducer.add_many([by_hand, ranked(0, 0, {"x": 1.0, "y": 1.0}), ranked(1, 0, {"x": 3.0, "y": 3.0})])
    assert rows(out + reducer.drain()) == {0: {"x": 2.0, "y": 4.0}}  # "avg" is no reduction: x keeps the mean


def test_ranks_outside_the_world_pass_through_and_are_counted() -> None:
    reducer = RankReducer(RankReduce(world_size=2))
    stray = ranked(5, 0, {"x": 1.0})
    assert reducer.add_many([stray]) == [stray]
    assert reducer.stats().outside == 1 and reducer.open_steps == 0


def test_held_token_is_the_oldest_read_still_in_an_open_step() -> None:
    reducer = RankReducer(RankReduce(world_size=2))
    reducer.add_many([ranked(0, 0, {"x": 1.0})], token=1)
    reducer.add_many([ranked(1, 0, {"x": 1.0}), ranked(0, 1, {"x": 1.0})], token=2)
    assert reducer.held_token() == 1
    reducer.add_many([ranked(1, 1, {"x": 1.0})], token=3)  # step 0 closes: both moved on
    assert reducer.held_token() == 2
    reducer.drain()
    assert reducer.held_token() is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"world_size": 0},
        {"world_size": 2, "reduce": "median"},
        {"world_size": 2, "metrics": {"x": "avg"}},
        {"world_size": 2, "deadline": 0},
        {"world_size": 2, "deadline": math.inf},
        {"world_size": 2, "max_open_steps": 0},
        {"world_size": 2, "keep_ranks": "yes"},
    ],
)
def test_bad_settings_raise_invalid_config_at_the_call(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidConfig):
        RankReduce(**kwargs)  # type: ignore[arg-type]


def test_nan_and_inf_reduce_as_numpy_does() -> None:
    reducer = RankReducer(RankReduce(world_size=2, metrics={"s": "sum", "lo": "min", "sd": "std"}))
    out = reducer.add_many(
        [
            ranked(0, 0, {"m": math.nan, "s": math.inf, "lo": math.nan, "sd": math.inf}),
            ranked(1, 0, dict.fromkeys(("m", "s", "lo", "sd"), 1.0)),
        ]
    )
    got = rows(out + reducer.drain())[0]
    for name, how in (("m", "mean"), ("s", "sum"), ("lo", "min"), ("sd", "std")):
        with np.errstate(invalid="ignore"):
            want = NUMPY[how](
                np.array([[math.nan, math.inf, math.nan, math.inf][["m", "s", "lo", "sd"].index(name)], 1.0])
            )
        assert (math.isnan(got[name]) and math.isnan(want)) or got[name] == want, name


# ---- property: the job's rows equal numpy's reduction over the ranks, however events interleave ----

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)


@st.composite
def runs(draw: st.DrawFn) -> tuple[int, list[list[list[float]]], list[int]]:
    """world size, values[step][rank][metric], and an interleaving of the ranks' calls."""
    world = draw(st.integers(1, 6))
    steps = draw(st.integers(1, 5))
    values = draw(
        st.lists(
            st.lists(st.lists(finite, min_size=6, max_size=6), min_size=world, max_size=world),
            min_size=steps,
            max_size=steps,
        )
    )
    order = draw(st.permutations([rank for rank in range(world) for _ in range(steps)]))
    return world, values, list(order)


@settings(max_examples=150, deadline=None)
@given(runs())
def test_reduced_rows_equal_numpys_over_the_ranks(run: tuple[int, list[list[list[float]]], list[int]]) -> None:
    world, values, order = run
    names = ["mean", "sum", "min", "max", "std", "count"]
    reducer = RankReducer(RankReduce(world_size=world, metrics={n: n for n in names}))  # type: ignore[misc]
    next_step = [0] * world
    out: list[Event] = []
    for rank in order:  # each rank logs its steps in order; ranks interleave as they please
        step = next_step[rank]
        next_step[rank] += 1
        out += reducer.add_many([ranked(rank, step, dict(zip(names, values[step][rank], strict=True)))])
    out += reducer.drain()
    got = rows(out)
    assert sorted(got) == list(range(len(values)))
    assert reducer.stats().partial == 0
    for step, per_rank in enumerate(values):
        table = np.array(per_rank)
        for i, name in enumerate(names):
            want = float(NUMPY[name](table[:, i]))
            assert got[step][name] == pytest.approx(want, rel=1e-9, abs=1e-6), (step, name)


def test_a_plans_ranks_table_is_checked_at_load(tmp_path: Path) -> None:
    from producers._plan import load_plan

    plan = tmp_path / "plan.toml"
    plan.write_text('[ranks]\nworld_size = 2\nreduce = "median"\n')
    with pytest.raises(InvalidConfig, match="ranks"):
        load_plan(plan)
    plan.write_text("[ranks]\nworld_size = 2\nsize = 3\n")
    with pytest.raises(InvalidConfig, match="ranks"):
        load_plan(plan)
