"""LogFrequency: the one rule every producer uses to decide which steps to log."""

from __future__ import annotations

import pytest

from bus import InvalidConfig
from producers import LogFrequency, MetricLogger
from sinks import MemorySink


@pytest.mark.parametrize(
    ("spec", "logged"),
    [
        (5, [0, 5, 10, 15]),  # itwinai log_freq=5: batches 0, 5, 10, ...
        ("batch", list(range(20))),
        ("step", list(range(20))),
        (LogFrequency(first=3), [0, 1, 2]),
        (LogFrequency(once=7), [7]),
        ("epoch", []),  # only epoch ends, never a plain step
    ],
)
def test_which_steps_are_logged(spec: object, logged: list[int]) -> None:
    freq = LogFrequency.parse(spec)  # type: ignore[arg-type]
    assert [step for step in range(20) if freq(step)] == logged


def test_epoch_mode_logs_epoch_ends_and_calls_without_a_step() -> None:
    freq = LogFrequency.parse("epoch")
    assert freq(None) and freq(41, epoch_end=True) and not freq(41)
    assert not LogFrequency.parse(5)(None) and LogFrequency.parse(5)(7, epoch_end=True)


@pytest.mark.parametrize("bad", [0, -1, True, "hourly", 2.5, None])
def test_bad_specs_are_typed_errors(bad: object) -> None:
    with pytest.raises(InvalidConfig):
        LogFrequency.parse(bad)  # type: ignore[arg-type]


def test_should_log_is_the_same_rule_as_calling_it() -> None:
    freq = LogFrequency.parse(3)
    assert [s for s in range(10) if freq.should_log(s)] == [s for s in range(10) if freq(s)] == [0, 3, 6, 9]
    assert freq.should_log(step=4, epoch_end=True)


def test_rules_compare_by_value_and_cannot_be_changed() -> None:
    assert LogFrequency.parse("batch") == LogFrequency.parse(1) == LogFrequency(every=1)
    assert LogFrequency.parse("epoch") != LogFrequency.parse(1)
    assert len({LogFrequency.parse(5), LogFrequency(every=5)}) == 1
    with pytest.raises(AttributeError):
        LogFrequency.parse(5).every = 2  # type: ignore[misc]


@pytest.mark.parametrize(
    "kwargs", [{"every": 2, "first": 3}, {}, {"every": 0}, {"first": 0}, {"once": -1}, {"every": 2.0}]
)
def test_bad_rules_are_typed_errors(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidConfig):
        LogFrequency(**kwargs)  # type: ignore[arg-type]


def test_exactly_one_rule() -> None:
    with pytest.raises(InvalidConfig):
        LogFrequency(every=2, first=3)
    with pytest.raises(InvalidConfig):
        LogFrequency()


def test_metric_logger_skips_before_building_anything() -> None:
    sink = MemorySink()
    with MetricLogger(sinks=[sink], log_freq=5) as log:
        for step in range(12):
            log.scalars({"loss": step / 10}, step=step)
            log.scalar("lr", 0.1, step=step)
        log.scalars({"val/acc": 0.9}, step=11, epoch_end=True)  # an epoch end is always logged
        log.hparams({"lr": 0.1})  # never skipped
        stats = log.stats()["memory"]
    assert [s for s, _ in sink.values("loss")] == [0, 5, 10]
    assert [s for s, _ in sink.values("lr")] == [0, 5, 10]
    assert sink.values("val/acc") == [(11, 0.9)]
    assert stats.published == 8  # skipped calls never reached the bus
