"""WandbSink with real offline wandb runs, read back from their .wandb files."""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any

import anyio
import pytest

from bus import DeliveryError, Hparams, MetricBus, Metrics, Origin, RetryPolicy, Scalar, SinkState
from sinks import WandbSink
from sinks._wandb import STEP_KEY
from tests.wandb_reader import read_runs

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))


def user_rows(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if not k.startswith("_")} for row in history]


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


async def test_every_value_reads_back_one_row_per_step_out_of_order_steps_kept(tmp_path: Path) -> None:
    steps = [10, 5, 7, 7, 0]  # backwards, repeated: wandb's own step= would drop most of these
    async with MetricBus() as bus:
        bus.add_sink(WandbSink(project="t", dir=tmp_path), max_interval=3600)  # in its worker process
        for step in steps[:3]:
            await bus.publish(Scalar("loss", step / 10, step=step))
            await bus.publish(
                Metrics({"acc": step / 100, "nan": math.nan, "inf": math.inf, "ninf": -math.inf}, step=step)
            )
        await bus.flush()  # a new batch: the same step again is a new row, not lost
        for step in steps[3:]:
            await bus.publish(Metrics({"loss": step / 10, "acc": step / 100}, step=step))
    (run,) = read_runs(tmp_path).values()
    rows = user_rows(run.history)
    assert [row[STEP_KEY] for row in rows] == steps
    for row in rows:
        assert row["loss"] == row[STEP_KEY] / 10 and row["acc"] == row[STEP_KEY] / 100
    for row in rows[:3]:
        assert math.isnan(row["nan"]) and row["inf"] == math.inf and row["ninf"] == -math.inf
    assert bus.stats()["wandb:t"].delivered == 8


async def test_one_run_per_origin_in_one_group_with_config_and_hparams(tmp_path: Path) -> None:
    async with MetricBus() as bus:
        bus.add_sink(WandbSink(project="fl", dir=tmp_path, group="hello-pt", config={"arch": "cnn"}), isolate="none")
        for rnd in range(3):
            for site in ("site-1", "site-2"):
                await bus.publish(Scalar("val/acc", 0.5 + rnd / 10, step=rnd, origin=Origin(site=site)))
        await bus.publish(
            Hparams({"lr": 0.01, "momentum": 0.9}, {"best/acc": 0.7}, step=3, origin=Origin(site="site-1"))
        )
    runs = read_runs(tmp_path)
    assert sorted(runs) == ["site-1", "site-2"]
    for name, run in runs.items():
        assert run.group == "hello-pt" and run.config["arch"] == "cnn"
        rows = user_rows(run.history)
        assert [(r[STEP_KEY], r["val/acc"]) for r in rows if "val/acc" in r] == [(s, 0.5 + s / 10) for s in range(3)]
        if name == "site-1":
            assert run.config["lr"] == 0.01 and run.config["momentum"] == 0.9
            assert rows[-1] == {STEP_KEY: 3, "best/acc": 0.7}


async def test_a_metric_named_like_the_step_axis_is_counted_as_rejected(tmp_path: Path) -> None:
    async with MetricBus(raise_on_loss=False) as bus:
        bus.add_sink(WandbSink(project="t", dir=tmp_path), isolate="none")
        await bus.publish(Scalar(STEP_KEY, 1.0, step=0))
        await bus.publish(Scalar("ok", 1.0, step=0))
    stats = bus.stats()["wandb:t"]
    assert stats.dropped == {"rejected": 1} and stats.delivered == 1 and stats.balanced


async def test_a_hanging_wandb_init_cannot_hang_the_bus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import wandb

    release = threading.Event()
    monkeypatch.setattr(wandb, "init", lambda **kwargs: release.wait())  # the one fake: a hang
    try:
        with anyio.fail_after(30), pytest.raises(DeliveryError, match="TimeoutError"):
            async with MetricBus(shutdown_timeout=5) as bus:
                bus.add_sink(
                    WandbSink(project="t", dir=tmp_path, init_timeout=0.2),
                    isolate="none",
                    retry=RetryPolicy(max_attempts=2, backoff=0.01),
                )
                await bus.publish(Scalar("loss", 1.0, step=0))
        stats = bus.stats()["wandb:t"]
        assert stats.state is SinkState.FAILED and stats.dropped == {"sink_failed": 1}
    finally:
        release.set()


async def test_a_hanging_wandb_finish_is_bounded_and_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from wandb.sdk.wandb_run import Run

    release, finished = threading.Event(), threading.Event()
    real_finish = Run.finish

    def slow_finish(self: Run, *args: Any, **kwargs: Any) -> None:  # the one fake: finish hangs
        release.wait()
        real_finish(self, *args, **kwargs)  # then really finishes, so no run is left half-open
        finished.set()

    monkeypatch.setattr(Run, "finish", slow_finish)
    try:
        with anyio.fail_after(30), pytest.raises(DeliveryError, match="finish did not return"):
            async with MetricBus() as bus:
                bus.add_sink(WandbSink(project="t", dir=tmp_path, finish_timeout=0.3), isolate="none")
                await bus.publish(Scalar("loss", 1.0, step=0))
        assert bus.stats()["wandb:t"].delivered == 1
    finally:
        release.set()
        finished.wait(30)  # the abandoned thread completes the real finish before the next test
