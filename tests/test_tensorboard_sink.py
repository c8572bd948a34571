"""TensorBoardSink, read back with TensorBoard's own reader and served by a real TensorBoard."""

from __future__ import annotations

import io
import json
import math
import os
import pickle
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest
from PIL import Image as PILImage
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
from tensorboard.compat.tensorflow_stub import errors, pywrap_tensorflow
from tensorboard.plugins.hparams import plugin_data_pb2
from tensorboardX.proto.event_pb2 import Event as EventProto
from tensorboardX.proto.summary_pb2 import Summary
from tensorboardX.summary import custom_scalars
from tensorboardX.summary import image as tensorboardx_image

from bus import (
    ChartLayout,
    Event,
    Histogram,
    Hparams,
    Image,
    InvalidConfig,
    InvalidEvent,
    MetricBus,
    Metrics,
    Origin,
    Scalar,
    Text,
)
from sinks import TensorBoardSink

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[1]
EVERYTHING = {"scalars": 0, "histograms": 0, "tensors": 0, "compressedHistograms": 0}


def load(run_dir: Path) -> EventAccumulator:
    acc = EventAccumulator(str(run_dir), size_guidance=EVERYTHING)
    acc.Reload()
    return acc


def event_files(run_dir: Path) -> list[Path]:
    return sorted(run_dir.glob("events.out.tfevents.*"))


def f32(x: float) -> float:
    return float(np.float32(x)) if math.isfinite(x) else x


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


async def publish(logdir: Path, events: list[Event], isolate: str = "none", **config: int) -> None:
    async with MetricBus() as bus:
        bus.add_sink(TensorBoardSink(logdir), isolate=isolate, **config)  # type: ignore[arg-type]
        await bus.publish_many(events)


@pytest.fixture(params=["none", "process"])
def isolate(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


async def test_every_scalar_value_step_and_wall_time_reads_back(tmp_path: Path, isolate: str) -> None:
    tags = ["train/loss", "ünïcødé/λ", "with space, comma", "new\nline", "val/acc"]
    values = [0.1, 1e-30, -2.5, math.nan, math.inf, -math.inf, 123456.789, 0.0]
    steps = [0, 1, 127, 128, 300, 2**31, 2**40, 2**63 - 1]  # varints of 1 to 9 bytes
    published = [
        Scalar(tag, v, step=s, wall_time=1_700_000_000.0 + i + 0.125)
        for i, (s, v) in enumerate(zip(steps, values, strict=True))
        for tag in tags
    ]
    await publish(tmp_path, published, isolate, max_batch=7)
    acc = load(tmp_path)
    assert sorted(acc.Tags()["scalars"]) == sorted(tags)
    for tag in tags:
        got = acc.Scalars(tag)
        expected = [e for e in published if e.name == tag]
        assert [g.step for g in got] == [e.step for e in expected]
        assert [g.wall_time for g in got] == [e.wall_time for e in expected]  # doubles: exact
        assert all(same(g.value, f32(e.value)) for g, e in zip(got, expected, strict=True))  # float32, as in TB


async def test_records_are_byte_for_byte_what_tensorboardx_protobufs_serialize(tmp_path: Path) -> None:
    scalars = [Scalar(f"t/{i % 3}", v, step=i * 1000, wall_time=1e9 + i) for i, v in enumerate([0.5, -1e300, math.nan])]
    metrics = Metrics({"a": 1.0, "ü": math.inf}, step=7, wall_time=2e9)
    await publish(tmp_path, [*scalars, metrics])
    (path,) = event_files(tmp_path)
    records = list(RawEventFileLoader(str(path)).Load())  # the reader checks every crc32c

    def proto(event: Scalar | Metrics, values: dict[str, float]) -> bytes:
        summary = Summary(value=[Summary.Value(tag=k, simple_value=v) for k, v in values.items()])
        return EventProto(wall_time=event.wall_time, step=event.step, summary=summary).SerializeToString()  # type: ignore[no-any-return]

    assert EventProto.FromString(records[0]).file_version == "brain.Event:2"
    assert records[1:] == [proto(s, {s.name: s.value}) for s in scalars] + [proto(metrics, metrics.values)]


async def test_metrics_become_one_series_per_key(tmp_path: Path) -> None:
    await publish(tmp_path, [Metrics({"loss": 1 / (s + 1), "lr": 0.5**s}, step=s) for s in range(20)])
    acc = load(tmp_path)
    assert [(e.step, e.value) for e in acc.Scalars("loss")] == [(s, f32(1 / (s + 1))) for s in range(20)]
    assert [e.value for e in acc.Scalars("lr")] == [f32(0.5**s) for s in range(20)]


async def test_histograms_from_raw_values_and_from_precomputed_bins(tmp_path: Path) -> None:
    raw = np.random.default_rng(0).normal(size=1_000)
    async with MetricBus() as bus:
        bus.add_sink(TensorBoardSink(tmp_path, histogram_bins=32), isolate="none")
        await bus.publish(Histogram("weights", 3, values=np.append(raw, [np.nan, np.inf])))
        await bus.publish(Histogram("grads", 4, bucket_limits=[0.0, 1.0, 2.0, 3.0], bucket_counts=[0, 5, 7, 1]))
        await bus.publish(Histogram("grads", 5, bucket_limits=[1.0, 2.0, 3.0], bucket_counts=[4, 0, 0]))
    acc = load(tmp_path)
    (w,) = acc.Histograms("weights")
    h = w.histogram_value  # NaN/inf have no bucket in TensorBoard: they are left out
    assert w.step == 3 and h.num == raw.size and len(h.bucket) == 32 and sum(h.bucket) == raw.size
    assert h.min == raw.min() and h.max == raw.max() and math.isclose(h.sum, raw.sum())
    assert list(h.bucket_limit) == pytest.approx(np.histogram(raw, bins=32)[1][1:].tolist())
    g4, g5 = acc.Histograms("grads")
    h = g4.histogram_value  # min/max: the outer edges of the occupied buckets, as TensorBoard draws them
    assert list(h.bucket_limit) == [0.0, 1.0, 2.0, 3.0] and list(h.bucket) == [0, 5, 7, 1]
    assert (h.num, h.min, h.max) == (13, 0.0, 3.0)
    h = g5.histogram_value  # the first bucket has no left edge: it gets its neighbour's width
    assert (g5.step, h.num, h.min, h.max) == (5, 4, 0.0, 1.0)


async def test_text_and_hparams_reach_their_plugins(tmp_path: Path) -> None:
    await publish(
        tmp_path,
        [
            Text("notes", "lr warm-up *done*", step=7),
            Hparams({"lr": 0.01, "optimizer": "adam", "layers": 4, "amp": True}, {"hparam/accuracy": 0.93}),
        ],
    )
    acc = load(tmp_path)
    (text,) = acc.Tensors("notes/text_summary")
    assert text.step == 7 and text.tensor_proto.string_val == [b"lr warm-up *done*"]
    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = start.session_start_info.hparams
    assert hparams["lr"].number_value == 0.01 and hparams["optimizer"].string_value == "adam"
    assert hparams["layers"].number_value == 4 and hparams["amp"].bool_value is True
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert [m.name.tag for m in experiment.metric_infos] == ["hparam/accuracy"]
    assert "_hparams_/session_end_info" in content
    assert [e.value for e in acc.Scalars("hparam/accuracy")] == [f32(0.93)]


async def test_images_are_png_image_summaries_with_tensorboardxs_pixels_in_each_origins_run(
    tmp_path: Path, isolate: str
) -> None:
    rng = np.random.default_rng(0)
    arrays = {
        "rgb": rng.integers(0, 256, (9, 14, 3), dtype=np.uint8),
        "rgba": rng.integers(0, 256, (5, 3, 4), dtype=np.uint8),
        "gray": rng.integers(0, 256, (6, 1, 1), dtype=np.uint8),
    }
    site = Origin(site="site-1")
    events: list[Event] = [
        Image(tag, step, pixels=a.tobytes(), height=a.shape[0], width=a.shape[1], channels=a.shape[2], wall_time=1e9)
        for step, (tag, a) in enumerate(arrays.items())
    ]
    events.append(Image("rgb", 7, pixels=arrays["rgb"].tobytes(), height=9, width=14, channels=3, origin=site))
    await publish(tmp_path, events, isolate)
    acc, site_acc = (EventAccumulator(str(d), size_guidance={"images": 0}) for d in (tmp_path, tmp_path / "site-1"))
    acc.Reload()
    site_acc.Reload()
    assert sorted(acc.Tags()["images"]) == sorted(arrays) and site_acc.Tags()["images"] == ["rgb"]
    for step, (tag, array) in enumerate(arrays.items()):
        (got,) = acc.Images(tag)
        theirs = tensorboardx_image(tag, array, dataformats="HWC").value[0].image  # what tensorboardX writes
        assert (got.step, got.wall_time, got.width, got.height) == (step, 1e9, theirs.width, theirs.height)
        ours = PILImage.open(io.BytesIO(got.encoded_image_string))
        mode = "RGBA" if array.shape[2] == 4 else "RGB"  # tensorboardX writes grayscale as RGB
        their_pixels = np.asarray(PILImage.open(io.BytesIO(theirs.encoded_image_string)).convert(mode))
        assert np.array_equal(np.asarray(ours.convert(mode)), their_pixels)
        assert np.array_equal(np.asarray(ours).reshape(array.shape), array)  # and exactly what was logged
    (site_image,) = site_acc.Images("rgb")
    assert site_image.step == 7 and site_image.encoded_image_string == acc.Images("rgb")[0].encoded_image_string


async def test_a_chart_layout_is_tensorboardxs_custom_scalars_record(tmp_path: Path) -> None:
    layout = {"Loss": {"both": ("Multiline", ("loss/train", "loss/val"))}, "Acc": {"m": ("Margin", ("a", "lo", "hi"))}}
    await publish(tmp_path, [ChartLayout(layout, wall_time=1e9, step=3)])
    (path,) = event_files(tmp_path)
    records = list(RawEventFileLoader(str(path)).Load())
    expected = EventProto(wall_time=1e9, step=3, summary=custom_scalars(layout)).SerializeToString()
    assert records[1:] == [expected]


async def test_one_run_per_origin_side_by_side(tmp_path: Path) -> None:
    events: list[Event] = []
    for step in range(5):
        events += [
            Scalar("loss", step, step=step),
            Scalar("loss", step + 0.5, step=step, origin=Origin(site="site-1")),
            Scalar("loss", step + 0.25, step=step, origin=Origin(site="site-2")),
            Scalar("loss", -1.0, step=step, origin=Origin(site="site-1", rank=1)),
            Scalar("loss", -2.0, step=step, origin=Origin(site="main")),  # labelled "site=main": not the default
            Scalar("loss", -3.0, step=step, origin=Origin(node="site-1")),  # a node, not the site site-1
        ]
    await publish(tmp_path, events, max_batch=3)
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["node=site-1", "site-1", "site-2", "site=main"]
    runs = {".": 0.0, "site-1": 0.5, "site-2": 0.25}
    for run, offset in runs.items():
        assert len(event_files(tmp_path / run)) == 1
        assert [(e.step, e.value) for e in load(tmp_path / run).Scalars("loss")] == [(s, s + offset) for s in range(5)]
    assert [e.value for e in load(tmp_path / "site-1" / "rank1").Scalars("loss")] == [-1.0] * 5
    assert [e.value for e in load(tmp_path / "site=main").Scalars("loss")] == [-2.0] * 5
    assert [e.value for e in load(tmp_path / "node=site-1").Scalars("loss")] == [-3.0] * 5


async def test_values_beyond_float32_become_infinity_not_garbage(tmp_path: Path) -> None:
    await publish(tmp_path, [Scalar("big", 1e300, step=0), Scalar("big", -1e300, step=1)])
    assert [e.value for e in load(tmp_path).Scalars("big")] == [math.inf, -math.inf]


async def test_the_largest_int64_step_is_written_and_one_beyond_is_refused_at_the_call(tmp_path: Path) -> None:
    with pytest.raises(InvalidEvent, match="step"):
        Scalar("x", 2.0, step=2**63)  # TensorBoard steps are int64: refused before any sink sees it
    async with MetricBus() as bus:
        bus.add_sink(TensorBoardSink(tmp_path), isolate="none")
        await bus.publish_many([Scalar("x", 1.0, step=1), Scalar("x", 3.0, step=2**63 - 1)])
    assert [(e.step, e.value) for e in load(tmp_path).Scalars("x")] == [(1, 1.0), (2**63 - 1, 3.0)]


async def test_picklable_before_open_and_files_appear_only_once_written(tmp_path: Path) -> None:
    sink = pickle.loads(pickle.dumps(TensorBoardSink(tmp_path / "logs", filename_suffix=".v2")))
    await sink.open()
    assert (tmp_path / "logs").is_dir() and not event_files(tmp_path / "logs")
    await sink.write_batch([Scalar("a", 1.0, step=0)])
    (path,) = event_files(tmp_path / "logs")
    assert re.fullmatch(
        rf"events\.out\.tfevents\.\d+\.{re.escape(socket.gethostname())}\.\d{{9}}\.{os.getpid()}\.\d+\.v2", path.name
    )
    await sink.close()
    assert [e.value for e in load(tmp_path / "logs").Scalars("a")] == [1.0]


async def test_a_batch_that_fails_half_encoded_leaves_nothing_behind_to_duplicate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = TensorBoardSink(tmp_path)
    batch: list[Event] = [Scalar("a", 1.0, step=0), Histogram("h", 0, values=[1.0, 2.0]), Scalar("a", 2.0, step=1)]
    real = sink._histogram
    monkeypatch.setattr(sink, "_histogram", lambda event: 1 / 0)
    await sink.open()
    with pytest.raises(ZeroDivisionError):
        await sink.write_batch(batch)
    monkeypatch.setattr(sink, "_histogram", real)
    await sink.write_batch(batch)  # what the bus's retry does
    await sink.close()
    acc = load(tmp_path)
    assert [e.value for e in acc.Scalars("a")] == [1.0, 2.0] and len(acc.Histograms("h")) == 1


CHILD = """
import os, signal, sys
import anyio
from bus import MetricBus, Metrics
from sinks import TensorBoardSink

async def main(logdir):
    async with MetricBus() as bus:
        bus.add_sink(TensorBoardSink(logdir), max_interval=0.005)  # in its worker process
        step = 0
        for flush in range(5):
            for _ in range(2_000):
                await bus.publish(Metrics({"loss": 1.0 / (step + 1), "acc": step / 1e6}, step=step))
                step += 1
            await bus.flush()
            print(step, flush=True)  # every step before this one is in the OS
        while step < 1_000_000:  # keep the worker writing when the kill lands
            await bus.publish(Metrics({"loss": 1.0 / (step + 1), "acc": step / 1e6}, step=step))
            step += 1
            if step % 3_000 == 0:
                os.killpg(os.getpid(), signal.SIGKILL)  # the trainer and its sink worker

anyio.run(main, sys.argv[1])
"""


def read_strictly(path: Path) -> int:
    """Records in an event file; only a torn last record is tolerated, never a bad checksum."""
    reader = pywrap_tensorflow.PyRecordReader_New(str(path))
    count = 0
    while True:
        try:
            reader.GetNext()
        except errors.OutOfRangeError:
            return count
        except errors.DataLossError as exc:
            assert "truncated record" in str(exc)
            return count
        count += 1


def test_kill_9_leaves_event_files_tensorboard_can_read(tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(CHILD))
    logdir = tmp_path / "logs"
    child = subprocess.run(
        [sys.executable, str(script), str(logdir)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        start_new_session=True,  # its own process group, so killpg takes nothing else
        timeout=30,
        check=False,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    flushed = [int(line) for line in child.stdout.split()]
    assert flushed == [2_000, 4_000, 6_000, 8_000, 10_000]
    (path,) = event_files(logdir)
    assert read_strictly(path) > flushed[-1]
    steps = [e.step for e in load(logdir).Scalars("loss")]
    assert steps == list(range(len(steps))) and len(steps) >= flushed[-1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _request_json(url: str, server: subprocess.Popen[bytes], within: float, body: object = None) -> Any:
    """GET `url` (POST `body` as JSON) once the server answers, polling until a deadline; fail
    early if the server exits."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    deadline = time.monotonic() + within
    while True:
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return json.loads(response.read())
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                raise
            time.sleep(0.1)


def test_a_real_tensorboard_server_serves_the_series_and_the_hparams(tmp_path: Path) -> None:
    logdir = tmp_path / "logs"
    site = Origin(site="site-1")
    scalars = [Scalar("train/loss", 1.0 / (s + 1), step=s * 10, origin=site) for s in range(10)]
    anyio.run(publish, logdir, [*scalars, Hparams({"lr": 0.1, "opt": "sgd"}, {"hparam/acc": 0.5}, origin=site)])
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1",
         "--port", str(port), "--load_fast", "false"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}/data/plugin"
    query = {"allowedStatuses": ["STATUS_SUCCESS"], "colParams": [{"metric": {"tag": "hparam/acc"}}], "sliceSize": 10}
    try:
        series = _request_json(f"{base}/scalars/scalars?run=site-1&tag=train%2Floss", server, within=15)
        groups = _request_json(f"{base}/hparams/session_groups", server, within=5, body=query)["sessionGroups"]
    finally:
        server.terminate()
        server.wait(10)
    assert [tuple(point) for point in series] == [(e.wall_time, e.step, f32(e.value)) for e in scalars]
    assert [(g["name"], g["hparams"]) for g in groups] == [("site-1", {"lr": 0.1, "opt": "sgd"})]
    assert [m["value"] for m in groups[0]["metricValues"]] == [0.5]


async def test_files_a_run_gets_from_later_stages_are_read_in_the_order_they_were_written(tmp_path: Path) -> None:
    # A framework's next stage (fit, then test) reopens the sink: a new file in the same run,
    # often within the same second; TensorBoard reads a run's files in name order.
    for step in range(12):  # more than ten files: counters 9 and 10 sort the wrong way as text
        sink = TensorBoardSink(tmp_path)
        await sink.open()
        await sink.write_batch([Scalar("loss", float(step), step=step)])
        await sink.close()
    assert len(event_files(tmp_path)) == 12
    assert [e.step for e in load(tmp_path).Scalars("loss")] == list(range(12))


# ---- many origins: a bounded set of open files ----


def open_event_files(logdir: Path) -> int:
    """Event files under `logdir` this process holds open now."""
    fds = Path("/proc/self/fd")
    targets = []
    for fd in fds.iterdir():
        try:
            targets.append(os.readlink(fd))
        except OSError:  # closed since the listing
            continue
    return sum(1 for t in targets if t.startswith(str(logdir)) and "events.out.tfevents." in t)


async def test_at_most_max_open_runs_files_are_open_and_a_closed_run_is_appended_to(tmp_path: Path) -> None:
    sink = TensorBoardSink(tmp_path, max_open_runs=3)
    origins = [Origin(site=f"site-{i}") for i in range(10)]
    await sink.open()
    peak = 0
    for step in range(4):  # every origin every step: each file is closed and reopened each time
        for origin in origins:
            await sink.write_batch([Scalar("loss", step + 0.5, step=step, origin=origin)])
            peak = max(peak, open_event_files(tmp_path))
    await sink.close()
    assert peak == 3 and open_event_files(tmp_path) == 0
    for origin in origins:
        (file,) = event_files(tmp_path / origin.label)  # one file per run, appended to, not a new one per reopen
        host = re.escape(socket.gethostname())
        assert re.fullmatch(rf"events\.out\.tfevents\.\d+\.{host}\.\d{{9}}\.\d+\.\d+", file.name)
        assert [(e.step, e.value) for e in load(tmp_path / origin.label).Scalars("loss")] == [
            (s, s + 0.5) for s in range(4)
        ]


async def test_a_live_tensorboard_reader_sees_records_appended_after_a_reopen(tmp_path: Path) -> None:
    sink = TensorBoardSink(tmp_path, max_open_runs=1)
    a, b = Origin(site="a"), Origin(site="b")
    await sink.open()
    await sink.write_batch([Scalar("loss", 1.0, step=1, origin=a)])
    live = EventAccumulator(str(tmp_path / "a"))  # what `tensorboard --logdir` keeps reloading
    live.Reload()
    assert [e.step for e in live.Scalars("loss")] == [1]
    await sink.write_batch([Scalar("loss", 9.0, step=1, origin=b)])  # closes a's file
    assert open_event_files(tmp_path / "a") == 0
    await sink.write_batch([Scalar("loss", 2.0, step=2, origin=a)])  # reopens it to append
    live.Reload()  # the same reader, going on from where it stopped
    assert [(e.step, e.value) for e in live.Scalars("loss")] == [(1, 1.0), (2, 2.0)]
    await sink.close()
    (file,) = event_files(tmp_path / "a")
    assert len(list(RawEventFileLoader(str(file)).Load())) == 3  # the header record, then the two scalars


def test_max_open_runs_must_be_a_positive_int() -> None:
    for bad in (0, -1, 1.5, None):
        with pytest.raises(InvalidConfig, match="max_open_runs"):
            TensorBoardSink("runs", max_open_runs=bad)  # type: ignore[arg-type]


PARTIAL_WRITE_CHILD = """
import resource, signal, sys
import anyio
from pathlib import Path
from bus import Origin, Scalar
from sinks import TensorBoardSink

async def main(logdir):
    a, b = Origin(site="a"), Origin(site="b")
    sink = TensorBoardSink(logdir, max_open_runs=1)
    await sink.open()
    await sink.write_batch([Scalar("x", float(s), step=s, origin=o) for s in range(100) for o in (a, b)])
    (file_a,) = Path(logdir, "a").glob("events.*")
    # a real partial write: the file size limit lets through half of a's next records, then EFBIG
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_a.stat().st_size + 1_000, hard))
    batch = [Scalar("x", float(s), step=s, origin=o) for s in range(100, 200) for o in (b, a)]
    try:
        await sink.write_batch(batch)
    except OSError as exc:
        print("failed:", exc.errno, flush=True)
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    await sink.write_batch(batch)  # the bus's retry
    await sink.close()

anyio.run(main, sys.argv[1])
"""


def test_a_batch_whose_write_fails_part_way_is_cut_off_so_its_retry_writes_it_once(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", PARTIAL_WRITE_CHILD, str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "failed: 27"  # EFBIG: b's records were written, a's only in part
    for run in ("a", "b"):
        assert [(e.step, e.value) for e in load(tmp_path / run).Scalars("x")] == [(s, float(s)) for s in range(200)]
        (file,) = event_files(tmp_path / run)
        assert read_strictly(file) == 201  # every record whole: no torn bytes left in the middle
