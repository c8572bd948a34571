"""PipelineMetrics: the pipeline's own health published into the sinks, read back from JSONL,
TensorBoard (EventAccumulator) and W&B's run files, and checked against the stats it sampled."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from bus import Event, InvalidConfig, MetricBus, Metrics, Origin, RetryPolicy, Scalar, SinkState
from producers import MetricLogger, PipelineMetrics, sink_label
from sinks import JsonlSink, MemorySink, TensorBoardSink, WandbSink, read_jsonl
from tests.helpers import GatedSink, wait_until, wait_until_sync
from tests.isolated_sinks import FailingSink
from tests.wandb_reader import read_runs

SERIES = ("queue", "lag_s", "dropped", "spooled_bytes", "down")


class GatedScalars(GatedSink):
    """A gated sink that takes Scalars only: the pipeline's own Metrics never reach it."""

    accepts = (Scalar,)


def pipeline_samples(events: Sequence[Event]) -> dict[int, dict[str, float]]:
    """step -> values of every pipeline Metrics event in a log."""
    return {
        e.step: dict(e.values)
        for e in events
        if isinstance(e, Metrics) and all(name.startswith("metricbus/") for name in e.values)
    }


def test_a_logger_with_pipeline_metrics_shows_a_stuck_sink_in_tensorboard_and_jsonl(tmp_path: Path) -> None:
    slow = GatedScalars("slow")
    log = MetricLogger()
    log.add_sink(slow)
    log.add_sink(JsonlSink(tmp_path / "m.jsonl"))
    log.add_sink(TensorBoardSink(tmp_path / "tb"))
    pipeline = PipelineMetrics(every=0.05)
    log.add_producer(pipeline)
    n = 1_000
    for step in range(n):
        log.scalar("x", float(step), step=step)
    first = pipeline.samples + 1  # sampled after every event was logged, from the next one on
    wait_until_sync(lambda: pipeline.samples >= first + 3)
    last = pipeline.samples - 1  # its stats were read before the gate opened
    slow.gate.set()
    log.close()
    assert log.stats()["slow"].delivered == n

    jsonl, tb = f"jsonl:{tmp_path}/m.jsonl", f"tensorboard:{tmp_path}/tb"
    assert pipeline.labels == {"slow": "slow", jsonl: "jsonl_m.jsonl", tb: "tensorboard_tb"}
    samples = pipeline_samples(read_jsonl(tmp_path / "m.jsonl"))
    assert set(range(first, last + 1)) <= set(samples)
    for step in range(first, last + 1):
        values = samples[step]
        assert set(values) == {f"metricbus/{label}/{s}" for label in pipeline.labels.values() for s in SERIES}
        assert values["metricbus/slow/queue"] == n  # held (in the logger, queued, in flight), none written
        assert values["metricbus/slow/dropped"] == values["metricbus/slow/down"] == 0.0
        assert values["metricbus/slow/spooled_bytes"] == 0.0
        assert values["metricbus/jsonl_m.jsonl/dropped"] == values["metricbus/tensorboard_tb/down"] == 0.0

    acc = EventAccumulator(str(tmp_path / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    for label in pipeline.labels.values():
        for series in SERIES:
            tag = f"metricbus/{label}/{series}"
            points = {p.step: p.value for p in acc.Scalars(tag)}
            assert points == {step: np.float32(v[tag]) for step, v in samples.items()}, tag


@pytest.mark.anyio
async def test_drops_and_a_failed_sink_show_beside_the_curves_in_wandb(tmp_path: Path) -> None:
    memory, slow = MemorySink(), GatedScalars("slow")
    pipeline = PipelineMetrics(every=0.05)
    n = 100
    async with MetricBus(raise_on_loss=False) as bus:
        bus.add_sink(memory)
        bus.add_sink(WandbSink(project="p", dir=tmp_path), rate="none")
        bus.add_sink(FailingSink(), retry=RetryPolicy(max_attempts=1))
        bus.add_sink(slow, capacity=10, when_full="drop_newest")
        bus.add_producer(pipeline)
        await bus.publish_many([Scalar("loss", 1 / (step + 1), step=step) for step in range(n)])
        await wait_until(lambda: slow.entered.is_set() and bus.stats()["FailingSink"].state is SinkState.FAILED)
        first = pipeline.samples + 1
        await wait_until(lambda: pipeline.samples > first + 1)
        dropped = bus.stats()["slow"].dropped_total
        slow.gate.set()
    assert 0 < dropped < n and bus.stats()["slow"].delivered == n - dropped
    samples = pipeline_samples(memory.events)
    after = [samples[s] for s in samples if s >= first]
    assert after and all(v["metricbus/FailingSink/down"] == 1.0 for v in after)
    assert all(v["metricbus/slow/dropped"] == dropped and v["metricbus/slow/queue"] == n - dropped for v in after)
    assert all(v["metricbus/memory/down"] == v["metricbus/memory/dropped"] == 0.0 for v in samples.values())
    (run,) = read_runs(tmp_path).values()
    shown = [row for row in run.history if "metricbus/slow/dropped" in row]
    for series in ("metricbus/slow/dropped", "metricbus/FailingSink/down", "metricbus/wandb_p/queue"):
        assert [row[series] for row in shown] == [samples[s][series] for s in sorted(samples)], series
    assert sum(1 for row in run.history if "loss" in row) == n  # the curve, in the same run


def test_sink_labels_are_readable_valid_names_and_unique() -> None:
    assert sink_label("csv:runs/exp1/metrics.csv") == "csv_metrics.csv"
    assert sink_label("tensorboard:runs/exp1/tb/") == "tensorboard_tb"
    assert sink_label("wandb:my-project") == "wandb_my-project"
    assert sink_label("redis:redis://127.0.0.1:6379/0/metricbus") == "redis_metricbus"
    assert sink_label("fast") == "fast" and sink_label("my sink: ünïcode") == "my_sink_n_code"
    pipeline = PipelineMetrics()
    a, b, c = "csv:runs/a/m.csv", "csv:runs/b/m.csv", "csv_runs_b_m.csv"
    assert [pipeline.label(x) for x in (a, b, c, a)] == [
        "csv_m.csv",
        "csv_runs_b_m.csv",
        "csv_runs_b_m.csv-2",
        "csv_m.csv",
    ]


def test_bad_settings_are_typed_errors() -> None:
    for every in (0, -1.0, math.nan, True, "5"):
        with pytest.raises(InvalidConfig, match="every"):
            PipelineMetrics(every=every)  # type: ignore[arg-type]
    with pytest.raises(InvalidConfig, match="prefix"):
        PipelineMetrics(prefix="a/b")
    with pytest.raises(InvalidConfig, match="origin"):
        PipelineMetrics(origin="rank0")  # type: ignore[arg-type]


def test_attach_tags_the_samples_with_the_loggers_origin(tmp_path: Path) -> None:
    with MetricLogger(sinks=[JsonlSink(tmp_path / "m.jsonl")], origin=Origin(rank=3)) as log:
        pipeline = PipelineMetrics.attach(log, every=0.05)
        wait_until_sync(lambda: pipeline.samples >= 2)
    events = [e for e in read_jsonl(tmp_path / "m.jsonl") if isinstance(e, Metrics)]
    assert len(events) >= 2 and {e.origin for e in events} == {Origin(rank=3)}
