"""ConsoleSink: plain lines in CI logs, a live bar on a terminal; both show the chosen metrics."""

from __future__ import annotations

import io

import pytest

from bus import MetricBus, Metrics, Scalar
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
