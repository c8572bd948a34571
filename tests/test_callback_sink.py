"""CallbackSink: OpenFL's log_metric_callback signature, and per-batch functions."""

from __future__ import annotations

import pytest

from bus import Context, InvalidConfig, MetricBus, Metrics, Origin, Scalar, Text
from sinks import CallbackSink

pytestmark = pytest.mark.anyio


async def test_openfl_style_callback_gets_node_task_metric_value_round() -> None:
    calls: list[tuple[object, ...]] = []

    def write_metric(node_name: str, task_name: str, metric_name: str, metric: float, round_number: int) -> None:
        calls.append((node_name, task_name, metric_name, metric, round_number))

    async with MetricBus() as bus:
        bus.add_sink(CallbackSink(write_metric))
        await bus.publish(
            Scalar("loss", 0.5, step=10, origin=Origin(site="col1"), context=Context(task="train", round=2))
        )
        await bus.publish(
            Metrics({"acc": 0.9, "f1": 0.8}, step=11, origin=Origin(site="col2"))
        )  # as openfl_callback publishes
        await bus.publish(Text("note", "not a metric", step=0))
    assert calls == [
        ("col1", "train", "loss", 0.5, 2),
        ("col2", "", "acc", 0.9, 11),
        ("col2", "", "f1", 0.8, 11),
    ]


async def test_batch_callback_sees_every_event_type() -> None:
    batches: list[list[object]] = []
    async with MetricBus() as bus:
        bus.add_sink(CallbackSink(batches.append, per="batch"), max_batch=2)
        for i in range(5):
            await bus.publish(Text("t", str(i), step=i))
    assert [e.text for batch in batches for e in batch] == ["0", "1", "2", "3", "4"]  # type: ignore[attr-defined]
    assert max(len(b) for b in batches) <= 2


def test_callback_sink_validates_its_arguments() -> None:
    with pytest.raises(InvalidConfig):
        CallbackSink(print, per="event")  # type: ignore[arg-type]
    with pytest.raises(InvalidConfig):
        CallbackSink("print")  # type: ignore[arg-type]
