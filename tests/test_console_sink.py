"""ConsoleSink: plain lines in CI logs, a live bar on a terminal; both show the chosen metrics."""

from __future__ import annotations

import io

import pytest

from bus import InvalidConfig, MetricBus, Metrics, Scalar
from sinks import ConsoleSink

pytestmark = pytest.mark.anyio


async def test_not_a_terminal_prints_plain_summary_lines() -> None:
    out = io.StringIO()
    async with MetricBus() as bus:
        bus.add_sink(ConsoleSink(["loss", "acc"], total=100, every=0, file=out), max_interval=3600)
        for step in range(3):
            await bus.publish(Metrics({"loss": 1 / (step + 1), "acc": step / 10, "lr": 0.1}, step=step))
            await bus.flush()
    lines = out.getvalue().splitlines()
    assert len(lines) == 3  # one per batch; nothing new to show at close, so no repeated line
    assert lines[0] == "training step 0/100 | loss=1  acc=0"
    assert lines[2] == "training step 2/100 | loss=0.3333  acc=0.2"
    assert "\x1b[" not in out.getvalue()  # no terminal control codes in a log file
    assert all("lr" not in line for line in lines)


async def test_lines_are_rate_limited_and_the_last_state_is_printed_at_close() -> None:
    out = io.StringIO()
    async with MetricBus() as bus:
        bus.add_sink(ConsoleSink(file=out, every=3600), max_interval=3600)
        for step in range(50):
            await bus.publish(Scalar("loss", float(step), step=step))
            await bus.flush()
    assert out.getvalue().splitlines() == ["training step 49 | loss=49"]


async def test_a_terminal_gets_a_progress_bar_with_the_values() -> None:
    out = io.StringIO()
    async with MetricBus() as bus:
        bus.add_sink(ConsoleSink(["loss"], total=10, file=out, force_terminal=True), max_interval=3600)
        for step in range(10):
            await bus.publish(Scalar("loss", 0.5, step=step))
        await bus.flush()
    text = out.getvalue()
    assert "\x1b[" in text and "10/10" in text and "loss=0.5" in text


async def test_every_steps_prints_when_the_step_reaches_a_new_multiple() -> None:
    out = io.StringIO()
    async with MetricBus() as bus:
        bus.add_sink(ConsoleSink(file=out, every=None, every_steps=10), max_interval=3600)
        for step in range(25):
            await bus.publish(Scalar("loss", float(step), step=step))
            await bus.flush()
    steps = [line.split()[2] for line in out.getvalue().splitlines()]
    assert steps == ["0", "10", "20", "24"]  # the last state again at close


@pytest.mark.parametrize("bad", [{"every": -1.0}, {"every_steps": 0}, {"total": 0}, {"every_steps": 2.5}])
def test_bad_settings_are_typed_errors(bad: dict[str, float]) -> None:
    with pytest.raises(InvalidConfig):
        ConsoleSink(**bad)  # type: ignore[arg-type]


def test_with_a_logger_the_terminal_detection_follows_the_stream() -> None:
    from producers import MetricLogger

    out = io.StringIO()  # not a terminal: plain lines, as in a CI log
    sink = ConsoleSink(["loss"], total=5, file=out, every=None, every_steps=2)
    assert not sink.interactive
    with MetricLogger(sinks=[sink]) as log:
        for step in range(5):
            log.scalars({"loss": 0.5, "lr": 0.1}, step=step)
    lines = out.getvalue().splitlines()
    assert lines and lines[-1] == "training step 4/5 | loss=0.5"
