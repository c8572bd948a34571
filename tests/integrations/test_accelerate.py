"""MetricBusTracker in one process (no launcher): Accelerate's tracker API, the config as
hyperparameters, `step=None`, and what is checked before anything starts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from accelerate import Accelerator

from bus import Hparams, InvalidConfig, Metrics, Origin, RunConfig
from producers.integrations import MetricBusTracker
from sinks import JsonlSink, MemorySink, read_jsonl


def test_a_single_process_logs_through_accelerate_and_end_training_closes_the_logger(
    tmp_path: Path, no_leftover_loggers: Callable[[], None]
) -> None:
    tracker = MetricBusTracker(sinks=[JsonlSink(tmp_path / "m.jsonl")], reduce={"tokens": "sum"})
    accelerator = Accelerator(cpu=True, log_with=tracker)
    accelerator.init_trackers("p", config={"lr": 0.1, "model": {"width": 8}})
    assert tracker.register(accelerator) is tracker and accelerator.trackers == [tracker]  # added once
    accelerator.get_tracker("metricbus").log({"loss": 1.0, "tokens": 3, "note": "text"}, step=5)
    accelerator.log({"loss": 0.5})  # step=None: one past the last step logged
    accelerator.log({"loss": 0.25})
    assert accelerator.get_tracker("metricbus", unwrap=True) is tracker.tracker
    accelerator.end_training()

    no_leftover_loggers()
    events = read_jsonl(tmp_path / "m.jsonl")
    assert [(e.step, e.values) for e in events if isinstance(e, Metrics)] == [
        (5, {"loss": 1.0, "tokens": 3.0}),  # strings are left out
        (6, {"loss": 0.5}),
        (7, {"loss": 0.25}),
    ]
    (hparams,) = [e for e in events if isinstance(e, Hparams)]
    assert hparams.params == {"lr": 0.1, "model/width": 8} and hparams.origin == Origin()
    assert not [e for e in events if isinstance(e, RunConfig)]  # no rank: nothing to declare to a reducer


def test_a_passed_logger_is_only_flushed_by_finish(no_leftover_loggers: Callable[[], None]) -> None:
    from producers import MetricLogger

    memory = MemorySink()
    with MetricLogger(sinks=[memory]) as log:
        tracker = MetricBusTracker(logger=log)
        tracker.log({"loss": 2.0}, step=0)
        tracker.finish()
        assert memory.values("loss") == [(0, 2.0)]
        tracker.log({"loss": 1.0})
    assert memory.values("loss") == [(0, 2.0), (1, 1.0)]
    no_leftover_loggers()


def test_a_reduction_it_does_not_know_is_refused_before_anything_starts() -> None:
    with pytest.raises(InvalidConfig, match="median"):
        MetricBusTracker(sinks=[MemorySink()], reduce={"loss": "median"})  # type: ignore[dict-item]
    with pytest.raises(InvalidConfig):
        MetricBusTracker()  # neither sinks nor a logger


def test_without_accelerate_the_error_names_the_extra(import_error_without: Callable[[str, str], str]) -> None:
    assert "pip install 'metricbus[transformers]'" in import_error_without("accelerate", "MetricBusTracker")
