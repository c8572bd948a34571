"""TensorBoardSink, read back with TensorBoard's own reader and served by a real TensorBoard."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from bus import Histogram, Hparams, MetricBus, Metrics, Origin, Scalar, Text
from sinks import TensorBoardSink
from tests.helpers import wait_until_sync

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[1]
EVERYTHING = {"scalars": 0, "histograms": 0, "tensors": 0, "compressedHistograms": 0}


def load(run_dir: Path) -> EventAccumulator:
    acc = EventAccumulator(str(run_dir), size_guidance=EVERYTHING)
    acc.Reload()
    return acc


def f32(x: float) -> float:
    return float(np.float32(x)) if math.isfinite(x) else x


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


@pytest.fixture(params=["none", "process"])
def isolate(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


async def test_every_scalar_value_step_and_wall_time_reads_back(tmp_path: Path, isolate: str) -> None:
    tags = ["train/loss", "ünïcødé/λ", "with space, comma", "val/acc"]
    values = [0.1, 1e-30, -2.5, math.nan, math.inf, -math.inf, 123456.789, 0.0]
    published = [
        Scalar(tag, v, step=s, wall_time=1_700_000_000.0 + s + 0.125) for s, v in enumerate(values) for tag in tags
    ]
    async with MetricBus() as bus:
        bus.add_sink(TensorBoardSink(tmp_path), isolate=isolate, max_batch=5)  # type: ignore[arg-type]
        await bus.publish_many(published)
    acc = load(tmp_path)
    assert sorted(acc.Tags()["scalars"]) == sorted(tags)
    for tag in tags:
        got = acc.Scalars(tag)
        expected = [e for e in published if e.name == tag]
        assert [g.step for g in got] == [e.step for e in expected]
        assert [g.wall_time for g in got] == [e.wall_time for e in expected]  # doubles: exact
        assert all(same(g.value, f32(e.value)) for g, e in zip(got, expected, strict=True))  # float32, as in TB


async def test_metrics_become_one_series_per_key(tmp_path: Path) -> None:
    async with MetricBus() as bus:
        bus.add_sink(TensorBoardSink(tmp_path), isolate="none")
        for step in range(20):
            await bus.publish(Metrics({"loss": 1 / (step + 1), "lr": 0.5**step}, step=step))
    acc = load(tmp_path)
    assert [(e.step, e.value) for e in acc.Scalars("loss")] == [(s, f32(1 / (s + 1))) for s in range(20)]
    assert [e.value for e in acc.Scalars("lr")] == [f32(0.5**s) for s in range(20)]


async def test_histograms_from_raw_values_and_from_precomputed_bins(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    raw = rng.normal(size=1_000)
    async with MetricBus() as bus:
        bus.add_sink(TensorBoardSink(tmp_path, histogram_bins=32), isolate="none")
        await bus.publish(Histogram("weights", 3, values=np.append(raw, [np.nan, np.inf])))
        await bus.publish(Histogram("grads", 4, bucket_limits=[0.0, 1.0, 2.0, 3.0], bucket_counts=[0, 5, 7, 1]))
    acc = load(tmp_path)
    (w,) = acc.Histograms("weights")
    finite = raw  # NaN/inf have no bucket in TensorBoard; they are left out of the histogram
    assert w.step == 3 and w.histogram_value.num == finite.size and len(w.histogram_value.bucket) == 32
    assert w.histogram_value.min == finite.min() and w.histogram_value.max == finite.max()
    assert math.isclose(w.histogram_value.sum, finite.sum()) and sum(w.histogram_value.bucket) == finite.size
    (g,) = acc.Histograms("grads")
    assert list(g.histogram_value.bucket_limit) == [0.0, 1.0, 2.0, 3.0]
    assert list(g.histogram_value.bucket) == [0, 5, 7, 1] and g.histogram_value.num == 13


async def test_text_and_hparams_reach_their_plugins(tmp_path: Path) -> None:
    async with MetricBus() as bus:
        bus.add_sink(TensorBoardSink(tmp_path), isolate="none")
        await bus.publish(Text("notes", "lr warm-up *done*", step=7))
        await bus.publish(Hparams({"lr": 0.01, "optimizer": "adam", "layers": 4}, {"hparam/accuracy": 0.93}))
    acc = load(tmp_path)
    (text,) = acc.Tensors("notes/text_summary")
    assert text.step == 7 and text.tensor_proto.string_val == [b"lr warm-up *done*"]
    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = start.session_start_info.hparams
    assert hparams["lr"].number_value == 0.01 and hparams["optimizer"].string_value == "adam"
    assert hparams["layers"].number_value == 4
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert [m.name.tag for m in experiment.metric_infos] == ["hparam/accuracy"]
    assert [e.value for e in acc.Scalars("hparam/accuracy")] == [f32(0.93)]


async def test_one_run_per_origin_side_by_side(tmp_path: Path) -> None:
    async with MetricBus() as bus:
        bus.add_sink(TensorBoardSink(tmp_path), isolate="none")
        for step in range(5):
            for site in ("site-1", "site-2"):
                loss = step + (0.5 if site == "site-2" else 0.0)
                await bus.publish(Scalar("loss", loss, step=step, origin=Origin(site=site)))
            await bus.publish(Scalar("loss", -1.0, step=step, origin=Origin(site="site-1", rank=1)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site-1", "site-2"]
    assert [e.value for e in load(tmp_path / "site-1").Scalars("loss")] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert [e.value for e in load(tmp_path / "site-2").Scalars("loss")] == [0.5, 1.5, 2.5, 3.5, 4.5]
    assert [e.value for e in load(tmp_path / "site-1" / "rank1").Scalars("loss")] == [-1.0] * 5


async def test_values_beyond_float32_become_infinity_not_garbage(tmp_path: Path) -> None:
    async with MetricBus() as bus:
        bus.add_sink(TensorBoardSink(tmp_path), isolate="none")
        await bus.publish(Scalar("big", 1e300, step=0))
        await bus.publish(Scalar("big", -1e300, step=1))
    assert [e.value for e in load(tmp_path).Scalars("big")] == [math.inf, -math.inf]


CHILD = """
import sys
from producers import MetricLogger
from sinks import TensorBoardSink
log = MetricLogger()
log.add_sink(TensorBoardSink(sys.argv[1]), max_interval=0.01)
step = 0
while True:
    log.scalars({"loss": 1.0 / (step + 1), "acc": step / 1e6}, step=step)
    step += 1
    if step == 2_000:
        print("ready", flush=True)
"""


def test_kill_9_leaves_event_files_tensorboard_can_read(tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(CHILD))
    logdir = tmp_path / "logs"
    child = subprocess.Popen(
        [sys.executable, str(script), str(logdir)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        start_new_session=True,
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"

    def written() -> int:
        return sum(p.stat().st_size for p in logdir.glob("events.out.tfevents.*")) if logdir.exists() else 0

    wait_until_sync(lambda: written() > 200_000, timeout=30)
    os.killpg(child.pid, signal.SIGKILL)  # the trainer and its sink worker, mid-write
    child.wait(10)
    steps = [e.step for e in load(logdir).Scalars("loss")]
    assert len(steps) > 1_000 and steps == list(range(len(steps)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_real_tensorboard_server_serves_the_series(tmp_path: Path) -> None:
    async with MetricBus() as bus:
        bus.add_sink(TensorBoardSink(tmp_path / "logs"), isolate="none")
        for step in range(10):
            await bus.publish(Scalar("train/loss", 1.0 / (step + 1), step=step, origin=Origin(site="site-1")))
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(tmp_path / "logs"), "--host", "127.0.0.1",
         "--port", str(port), "--load_fast", "false"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/data/plugin/scalars/scalars?run=site-1&tag=train%2Floss"
    try:
        deadline = time.monotonic() + 60
        series = None
        while series is None:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    series = json.loads(response.read())
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.2)  # polling the server until it answers, bounded by the deadline
    finally:
        server.terminate()
        server.wait(10)
    assert [(step, value) for _, step, value in series] == [(s, f32(1.0 / (s + 1))) for s in range(10)]
    assert re.fullmatch(
        r"events\.out\.tfevents\.\d+\..+\.\d+\.\d+", next((tmp_path / "logs" / "site-1").iterdir()).name
    )
