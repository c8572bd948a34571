"""WandbSink with real offline wandb runs, read back from their .wandb files.

The one fake is a hang: wandb.init or Run.finish blocking on an event, to check the timeouts.
"""

from __future__ import annotations

import math
import os
import pickle
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest
from PIL import Image as PILImage

from bus import (
    ChartLayout,
    DeliveryError,
    Histogram,
    Hparams,
    Image,
    MetricBus,
    Metrics,
    Origin,
    RetryPolicy,
    Scalar,
    SinkState,
    Text,
)
from sinks import WandbSink
from sinks._wandb import STEP_KEY, _run_id
from tests.helpers import wait_until_sync
from tests.wandb_reader import read_resumed_runs, read_runs

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"MODE": "offline", "SILENT": "true", "DIR": str(tmp_path), "DISABLE_GIT": "true"}.items():
        monkeypatch.setenv(f"WANDB_{name}", value)


def user_rows(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if not k.startswith("_")} for row in history]


def wandb_threads_done() -> bool:
    return not any(t.name == "metricbus-wandb" for t in threading.enumerate())


async def test_every_value_reads_back_one_row_per_step_out_of_order_steps_kept(tmp_path: Path) -> None:
    steps = [10, 5, 7, 7, 7, 0]  # backwards, repeated: wandb's own step= would drop most of these
    async with MetricBus() as bus:
        bus.add_sink(WandbSink(project="t", dir=tmp_path), max_interval=3600, rate="none")  # worker; every row
        for step in steps[:3]:
            await bus.publish(Scalar("loss", step / 10, step=step))
            await bus.publish(
                Metrics({"acc": step / 100, "nan": math.nan, "inf": math.inf, "ninf": -math.inf}, step=step)
            )
        await bus.publish(Metrics({"loss": 0.7, "acc": 0.07}, step=7))  # same names again: a new row
        await bus.flush()  # a new batch: the same step again is a new row, not lost
        for step in steps[4:]:
            await bus.publish(Metrics({"loss": step / 10, "acc": step / 100}, step=step))
    (run,) = read_runs(tmp_path).values()
    rows = user_rows(run.history)
    assert [row[STEP_KEY] for row in rows] == steps
    for row in rows:
        assert row["loss"] == row[STEP_KEY] / 10 and row["acc"] == row[STEP_KEY] / 100
    for row in rows[:3]:
        assert math.isnan(row["nan"]) and row["inf"] == math.inf and row["ninf"] == -math.inf
    assert bus.stats()["wandb:t"].delivered == 9


async def test_histograms_and_text_read_back(tmp_path: Path) -> None:
    limits = tuple(float(i) for i in range(1, 1001))  # more buckets than wandb's 512: merged pairwise
    async with MetricBus() as bus:
        bus.add_sink(WandbSink(project="t", dir=tmp_path), isolate="none", rate="none")
        await bus.publish(Histogram("w", 1, values=(1.0, 2.0, 2.0, math.nan, math.inf)))
        await bus.publish(Histogram("b", 1, bucket_limits=limits, bucket_counts=(1.0,) * 1000))
        await bus.publish(Text("sample", 'a, "quoted"\nline', step=1))
    (run,) = read_runs(tmp_path).values()
    (row,) = user_rows(run.history)
    assert row["w"]["_type"] == "histogram" and sum(row["w"]["values"]) == 3  # NaN/inf fit no bin
    assert row["b"]["values"] == [2] * 500 and row["b"]["bins"] == [0, *range(2, 1001, 2)]
    assert row["sample"] == 'a, "quoted"\nline' and row[STEP_KEY] == 1


async def test_images_are_wandb_images_in_the_row_of_their_step_and_layouts_are_not_sent(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rgb, gray, rgba = (rng.integers(0, 256, shape, dtype=np.uint8) for shape in [(4, 5, 3), (1, 7, 1), (3, 2, 4)])
    async with MetricBus() as bus:
        sink = bus.add_sink(WandbSink(project="t", dir=tmp_path), rate="none")  # in its worker process
        await bus.publish(Scalar("loss", 0.5, step=3))
        await bus.publish(Image("rgb", 3, pixels=rgb.tobytes(), height=4, width=5, channels=3))
        await bus.publish(Image("gray_row", 3, pixels=gray.tobytes(), height=1, width=7, channels=1))
        await bus.publish(Image("rgb", 3, pixels=rgba[:, :, :3].tobytes(), height=3, width=2, channels=3))
        await bus.publish(Image("rgba", 1, pixels=rgba.tobytes(), height=3, width=2, channels=4))
        await bus.publish(ChartLayout({"c": {"t": ("Multiline", ("loss",))}}))  # W&B has no such thing
    assert bus.stats()[sink].published == bus.stats()[sink].delivered == 5
    (run,) = read_runs(tmp_path).values()
    (run_file,) = tmp_path.rglob("*.wandb")
    files = run_file.parent / "files"  # where wandb keeps a run's media

    def pixels(value: dict[str, Any]) -> np.ndarray:
        assert value["_type"] == "image-file" and value["format"] == "png"
        image = PILImage.open(files / value["path"])
        assert image.size == (value["width"], value["height"])
        return np.asarray(image).reshape(value["height"], value["width"], -1)

    first, second, third = user_rows(run.history)  # the same name again at one step: a new row
    assert (first[STEP_KEY], first["loss"], second[STEP_KEY], third[STEP_KEY]) == (3, 0.5, 3, 1)
    assert np.array_equal(pixels(first["rgb"]), rgb) and np.array_equal(pixels(first["gray_row"]), gray)
    assert np.array_equal(pixels(second["rgb"]), rgba[:, :, :3]) and np.array_equal(pixels(third["rgba"]), rgba)


async def test_one_run_per_origin_in_one_group_with_config_and_hparams(tmp_path: Path) -> None:
    sink = WandbSink(project="fl", dir=tmp_path, config={"arch": "cnn"})
    async with MetricBus() as bus:
        bus.add_sink(sink, isolate="none", rate="none")
        for rnd in range(3):
            for site in ("site-1", "site-2"):
                await bus.publish(Scalar("val/acc", 0.5 + rnd / 10, step=rnd, origin=Origin(site=site)))
        await bus.publish(
            Hparams({"lr": 0.01, "momentum": 0.9}, {"best/acc": 0.7}, step=3, origin=Origin(site="site-1"))
        )
    runs = read_runs(tmp_path)
    assert sorted(runs) == ["site-1", "site-2"]
    assert len(list(tmp_path.rglob("*.wandb"))) == 2
    for name, run in runs.items():
        assert run.group == sink.group and sink.group.startswith("metricbus-") and run.config["arch"] == "cnn"
        rows = user_rows(run.history)
        assert [(r[STEP_KEY], r["val/acc"]) for r in rows if "val/acc" in r] == [(s, 0.5 + s / 10) for s in range(3)]
        if name == "site-1":
            assert run.config["lr"] == 0.01 and run.config["momentum"] == 0.9
            assert rows[-1] == {STEP_KEY: 3, "best/acc": 0.7} and run.summary["best/acc"] == 0.7


async def test_names_wandb_reserves_are_counted_as_rejected(tmp_path: Path) -> None:
    async with MetricBus(raise_on_loss=False) as bus:
        bus.add_sink(WandbSink(project="t", dir=tmp_path), isolate="none", rate="none")
        await bus.publish(Scalar(STEP_KEY, 1.0, step=0))
        await bus.publish(Metrics({"_step": 5.0, "ok": 2.0}, step=0))  # wandb would overwrite _step
        await bus.publish(Scalar("ok", 1.0, step=0))
    stats = bus.stats()["wandb:t"]
    assert stats.dropped == {"rejected": 2} and stats.delivered == 1 and stats.balanced
    (run,) = read_runs(tmp_path).values()
    assert user_rows(run.history) == [{STEP_KEY: 0, "ok": 1.0}]


def test_picklable_before_open_and_name_is_the_origin() -> None:
    sink = pickle.loads(pickle.dumps(WandbSink(project="p", group="g", tags=["a"])))
    assert (sink.group, sink.init_kwargs) == ("g", {"tags": ["a"]})
    with pytest.raises(TypeError, match="name"):
        WandbSink(project="p", name="mine")


async def test_a_hanging_wandb_init_cannot_hang_the_bus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import wandb

    release = threading.Event()
    monkeypatch.setattr(wandb, "init", lambda **kwargs: release.wait())  # the one fake: a hang
    start = time.monotonic()
    try:
        with pytest.raises(DeliveryError, match=r"wandb.init of \['main'\]"):
            async with MetricBus(shutdown_timeout=5) as bus:
                bus.add_sink(
                    WandbSink(project="t", dir=tmp_path, init_timeout=0.2, finish_timeout=0.2),
                    isolate="none",
                    retry=RetryPolicy(max_attempts=2, backoff=0.01),
                )
                await bus.publish(Scalar("loss", 1.0, step=0))
        assert time.monotonic() - start < 3
        stats = bus.stats()["wandb:t"]
        # a W&B that does not answer in time is down (a timeout), then failed at shutdown: its
        # event is counted, and saved for replay
        assert stats.state is SinkState.FAILED and stats.dropped == {"sink_down": 1} and stats.saved == 1
    finally:
        release.set()
        wait_until_sync(wandb_threads_done)  # the late calls end before wandb.init is restored


async def test_a_hanging_wandb_finish_is_bounded_and_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from wandb.sdk.wandb_run import Run

    release = threading.Event()
    real_finish = Run.finish

    def slow_finish(self: Run, *args: Any, **kwargs: Any) -> None:  # the one fake: finish hangs
        release.wait()
        real_finish(self, *args, **kwargs)  # then really finishes, so no run is left half-open

    monkeypatch.setattr(Run, "finish", slow_finish)
    try:
        with (
            anyio.fail_after(30),
            pytest.raises(DeliveryError, match=r"stuck in run.finish; runs left open: \['main'\]"),
        ):
            async with MetricBus() as bus:
                bus.add_sink(WandbSink(project="t", dir=tmp_path, finish_timeout=0.3), isolate="none")
                await bus.publish(Scalar("loss", 1.0, step=0))
        assert bus.stats()["wandb:t"].delivered == 1
    finally:
        release.set()
        wait_until_sync(wandb_threads_done, timeout=30)  # the real finish completes before the next test


HANGING_WANDB = """
import sys, threading, anyio, wandb
from wandb.sdk.wandb_run import Run
from bus import MetricBus, Scalar
from sinks import WandbSink

if sys.argv[1] == "init":
    wandb.init = lambda **kwargs: threading.Event().wait()
else:
    Run.finish = lambda self, *args, **kwargs: threading.Event().wait()

async def main():
    async with MetricBus(raise_on_loss=False) as bus:
        bus.add_sink(WandbSink(project="t", init_timeout=0.3, finish_timeout=0.3), isolate="none")
        await bus.publish(Scalar("loss", 1.0, step=0))
    print(bus.stats()["wandb:t"].state.value)

anyio.run(main)
"""


@pytest.mark.parametrize("hangs_in", ["init", "finish"])
def test_a_wandb_call_that_never_returns_does_not_keep_the_process_alive(hangs_in: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(HANGING_WANDB), hangs_in],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["failed"]


async def test_by_default_w_and_b_gets_ten_rows_a_second_each_the_mean_of_its_window(tmp_path: Path) -> None:
    t0 = 1_700_000_000.0
    async with MetricBus() as bus:
        name = bus.add_sink(WandbSink(project="t", dir=tmp_path), isolate="none")
        # two seconds of a 1 kHz loop, as far as the events' wall times say
        await bus.publish_many(
            [Scalar("loss", float(i), step=i, wall_time=t0 + (i + 0.5) / 1_000) for i in range(2_000)]
        )
    (run,) = read_runs(tmp_path).values()
    rows = user_rows(run.history)
    assert [row[STEP_KEY] for row in rows] == [w * 100 + 99 for w in range(20)]  # W&B's guidance: ~16 rows/s
    assert [row["loss"] for row in rows] == [w * 100 + 49.5 for w in range(20)]  # the mean: the true curve
    stats = bus.stats()[name]
    assert stats.delivered == 20 and stats.reduced == 1_980 and stats.balanced


# ---- many origins: a bounded set of open runs ----


def open_run_files(under: Path) -> set[str]:
    """The .wandb files under `under` that wandb's service (a child of this process) holds open:
    the open runs."""
    import psutil

    services = [p for p in psutil.Process().children(recursive=True) if p.name() == "wandb-core"]
    files = {f.path for p in services for f in p.open_files()}
    return {f for f in files if f.endswith(".wandb") and f.startswith(str(under))}


async def test_at_most_max_open_runs_are_open_and_a_finished_run_is_resumed_as_one_run(tmp_path: Path) -> None:
    sink = WandbSink(project="t", dir=tmp_path, group="g", max_open_runs=2)
    origins = [Origin(site="site-1"), Origin(node="site-1"), Origin(rank=0), Origin(site="a", rank=0)]
    await sink.open()
    peak = 0
    for rnd in range(2):
        for i, origin in enumerate(origins):
            await sink.write_batch([Scalar("loss", rnd + i / 10, step=rnd, origin=origin)])
            peak = max(peak, len(open_run_files(tmp_path)))
        # one batch with every origin: written two runs at a time
        await sink.write_batch([Scalar("acc", rnd + i / 10, step=rnd, origin=o) for i, o in enumerate(origins)])
        peak = max(peak, len(open_run_files(tmp_path)))
    await sink.close()
    assert peak == 2
    runs = read_resumed_runs(tmp_path)
    assert sorted(run.name for run in runs.values()) == sorted(o.label for o in origins)  # one run id per origin
    for i, origin in enumerate(origins):
        (run,) = [r for r in runs.values() if r.name == origin.label]
        assert run.run_id == _run_id("g", origin.label) and run.group == "g"
        assert run.files > 1  # finished and resumed under its id
        rows = [(r[STEP_KEY], *sorted(k for k in r if not k.startswith("_") and k != STEP_KEY)) for r in run.history]
        assert rows == [(0, "loss"), (0, "acc"), (1, "loss"), (1, "acc")]
        assert [r.get("loss", r.get("acc")) for r in run.history] == [i / 10, i / 10, 1 + i / 10, 1 + i / 10]


def test_run_ids_are_stable_and_distinct_for_labels_that_would_read_alike() -> None:
    assert _run_id("g", "site-1/rank0") == _run_id("g", "site-1/rank0")
    assert _run_id("g", "site-1/rank0").startswith("g-site-1-rank0-")
    assert len({_run_id("g", "a/b"), _run_id("g", "a-b"), _run_id("g-a", "b"), _run_id("g", "a=b")}) == 4
    long = _run_id("g" * 200, "site")
    assert len(long) <= 128 and long != _run_id("g" * 200, "other")


async def test_by_default_a_step_that_goes_backwards_starts_a_new_row_never_moving_a_value(tmp_path: Path) -> None:
    steps = [10, 5, 7, 5, 12]  # within one 0.1 s window of W&B's default rate control
    async with MetricBus() as bus:
        bus.add_sink(WandbSink(project="t", dir=tmp_path), isolate="none")
        await bus.publish_many([Scalar("loss", float(i), step=s, wall_time=1e9) for i, s in enumerate(steps)])
    (run,) = read_runs(tmp_path).values()
    assert [(row[STEP_KEY], row["loss"]) for row in user_rows(run.history)] == [(10, 0.0), (7, 1.5), (12, 3.5)]
