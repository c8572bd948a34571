"""The media and one-off events (Audio, Video, PrCurve, Mesh, Embedding, Graph, Tensor): validation at the
call, the wire and JSONL round trips, and what each sink does with them (W&B and MLflow read back
with their own readers; the sinks that take only measurements are not sent them)."""

from __future__ import annotations

import csv
import io
import wave
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
from mlflow import MlflowClient
from PIL import Image as PILImage

from bus import (
    EVENT_TYPES,
    Audio,
    Embedding,
    Event,
    Graph,
    InvalidEvent,
    Mesh,
    MetricBus,
    PrCurve,
    Scalar,
    Tensor,
    Video,
    wire,
)
from producers import MetricLogger, SummaryWriter
from sinks import CallbackSink, ConsoleSink, CsvSink, JsonlSink, MemorySink, MLflowSink, WandbSink, read_jsonl
from sinks._mlflow import ORIGIN_TAG
from sinks._wandb import STEP_KEY
from tests.wandb_reader import read_runs

RNG = np.random.default_rng(0)
CLIP = RNG.integers(-32768, 32767, (50, 2), dtype=np.int16)
FRAMES = RNG.integers(0, 256, (3, 4, 6, 3), dtype=np.uint8)


def one_of_each() -> list[Event]:
    return [
        Audio("sound", 1, samples=CLIP.astype("<i2").tobytes(), channels=2, sample_rate=8000),
        Video("clip", 2, frames=FRAMES.tobytes(), length=3, height=4, width=6, channels=3, fps=2.5),
        PrCurve(
            "pr",
            3,
            true_positives=[3, 2, 0],
            false_positives=[3, 1, 0],
            true_negatives=[0, 2, 3],
            false_negatives=[0, 1, 3],
            precision=[0.5, 2 / 3, float("nan")],
            recall=[1.0, 2 / 3, 0.0],
            num_thresholds=3,
        ),
        Mesh(
            "mesh",
            4,
            vertices=np.arange(9, dtype="<f4").tobytes(),
            vertices_shape=(1, 3, 3),
            faces=np.array([0, 1, 2], "<f4").tobytes(),
            faces_shape=(1, 1, 3),
            config='{"camera": {"fov": 75}}',
        ),
        Embedding(
            "emb",
            5,
            values=np.arange(6, dtype="<f8").tobytes(),
            rows=3,
            dims=2,
            metadata=["a\tx", "b\ty", "c\tz"],
            metadata_header="name\tgroup",
            label_pixels=bytes(3 * 2 * 2),
            label_size=2,
            label_channels=1,
        ),
        Graph(b"\x0a\x03abc", run_metadata=b"\x12\x00"),
        Tensor("weights", 6, data=np.array([[1.5, float("nan")]], "<f4").tobytes(), dtype="float32", shape=(1, 2)),
    ]


def comparable(events: list[Event]) -> list[Any]:
    """Events as builtins, NaN spelled out so that equal events compare equal."""
    return [repr(msgspec.to_builtins(e)) for e in events]


def test_every_new_kind_is_an_event_type_and_survives_the_wire_and_jsonl(tmp_path: Path) -> None:
    events = one_of_each()
    assert {type(e) for e in events} <= set(EVENT_TYPES)
    assert comparable(wire.decode(wire.encode_events(events))) == comparable(events)
    assert comparable(wire.decode(wire.encode_rows(events))) == comparable(events)
    with MetricLogger(sinks=[JsonlSink(tmp_path / "events.jsonl")]) as log:
        for event in events:
            log.publish(event)
    assert comparable(read_jsonl(tmp_path / "events.jsonl")) == comparable(events)


@pytest.mark.parametrize(
    ("kind", "arguments", "field"),
    [
        (Audio, {"samples": b"\x00\x00\x00", "channels": 1}, "samples"),  # half a frame
        (Audio, {"samples": b"\x00\x00", "channels": 3}, "channels"),
        (Audio, {"samples": b"\x00\x00", "sample_rate": 0}, "sample_rate"),
        (Video, {"frames": bytes(12), "length": 1, "height": 2, "width": 2, "channels": 4}, "channels"),
        (Video, {"frames": bytes(11), "length": 1, "height": 2, "width": 2}, "frames"),
        (Video, {"frames": bytes(12), "length": 1, "height": 2, "width": 2, "fps": 0}, "fps"),
        (PrCurve, {**{k: [1.0] for k in ("true_positives", "false_positives", "true_negatives")}}, "false_negatives"),
        (Mesh, {"vertices": bytes(12), "vertices_shape": (1, 1, 2)}, "vertices_shape"),
        (Mesh, {"vertices": bytes(12), "vertices_shape": (1, 1, 3), "config": "{not json"}, "config"),
        (Embedding, {"values": bytes(16), "rows": 1, "dims": 2, "metadata": ["a", "b"]}, "metadata"),
        (Embedding, {"values": bytes(16), "rows": 1, "dims": 2, "metadata": ["a\nb"]}, "metadata[0]"),
        (Tensor, {"data": bytes(6), "dtype": "float32", "shape": (2,)}, "data"),
        (Tensor, {"data": bytes(4), "dtype": "uint16", "shape": (2,)}, "dtype"),
        (Tensor, {"data": bytes(4), "dtype": "int8", "shape": (2, -2)}, "shape[1]"),
        (Tensor, {"data": b"\x00\x02", "dtype": "bool", "shape": (2,)}, "data"),
    ],
)
def test_a_malformed_media_event_is_refused_naming_its_field(kind: Any, arguments: dict[str, Any], field: str) -> None:
    if kind is PrCurve:
        arguments = {**arguments, "false_negatives": [1.0, 2.0], "precision": [1.0], "recall": [1.0]}
    with pytest.raises(InvalidEvent) as error:
        kind("x", 0, **arguments)
    assert error.value.field == field


def test_writer_calls_with_bad_values_raise_invalid_event_at_the_call() -> None:
    memory = MemorySink()
    with MetricLogger(sinks=[memory]) as log, SummaryWriter(logger=log) as writer:
        bad_calls = [
            lambda: writer.add_audio("a", np.zeros((10, 3))),  # 3 channels
            lambda: writer.add_audio("a", np.array(["x"])),
            lambda: writer.add_video("v", np.zeros((2, 3, 8, 8))),  # 4-d
            lambda: writer.add_pr_curve("p", [0, 1], [0.5]),
            lambda: writer.add_mesh("m", np.zeros((1, 4, 2))),
            lambda: writer.add_embedding(np.zeros((3, 2)), metadata=["only", "two"]),
            lambda: writer.add_embedding(np.zeros((2, 2)), label_img=np.zeros((2, 3, 4, 5))),  # not square
            lambda: writer.add_image_with_boxes("b", np.zeros((3, 8, 8)), np.zeros((2, 3))),
            lambda: writer.add_tensor("t", np.zeros(3, np.uint16)),  # torch writes no uint16 tensor
            lambda: writer.add_tensor("t", [1.0, 2.0]),
        ]
        for call in bad_calls:
            with pytest.raises(InvalidEvent):
                call()
        writer.add_audio("a", np.zeros(8), 1)
    assert [type(e).__name__ for e in memory.events] == ["Audio"]


@pytest.mark.anyio
async def test_sinks_of_measurements_are_not_sent_media_and_stay_balanced(tmp_path: Path) -> None:
    calls: list[Any] = []
    async with MetricBus() as bus:
        csv_sink = bus.add_sink(CsvSink(tmp_path / "m.csv"), isolate="none")
        console = bus.add_sink(ConsoleSink(file=io.StringIO()))
        callback = bus.add_sink(CallbackSink(lambda *call: calls.append(call)), name="callback")
        await bus.publish(Scalar("loss", 0.5, step=1))
        await bus.publish_many(one_of_each())
    for name in (csv_sink, console, callback):
        stats = bus.stats()[name]
        assert (stats.published, stats.delivered, stats.dropped) == (1, 1, {}), name
    with open(tmp_path / "m.csv", newline="") as file:
        assert [row["name"] for row in csv.DictReader(file)] == ["loss"]
    assert len(calls) == 1


@pytest.mark.anyio
async def test_wandb_gets_audio_as_wandb_audio_and_video_as_wandb_video(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {"MODE": "offline", "SILENT": "true", "DIR": str(tmp_path), "DISABLE_GIT": "true"}.items():
        monkeypatch.setenv(f"WANDB_{name}", value)
    audio, video = one_of_each()[:2]
    async with MetricBus() as bus:
        sink = bus.add_sink(WandbSink(project="t", dir=tmp_path), rate="none")  # in its worker process
        await bus.publish_many([audio, video, *one_of_each()[2:]])  # the rest: no W&B equivalent, not sent
    assert bus.stats()[sink].published == bus.stats()[sink].delivered == 2
    (run,) = read_runs(tmp_path).values()
    (run_file,) = tmp_path.rglob("*.wandb")
    files = run_file.parent / "files"
    rows = [row for row in run.history if "sound" in row or "clip" in row]
    sound = next(row for row in rows if "sound" in row)
    clip = next(row for row in rows if "clip" in row)
    assert (sound[STEP_KEY], clip[STEP_KEY]) == (1, 2)
    assert sound["sound"]["_type"] == "audio-file" and clip["clip"]["_type"] == "video-file"
    with wave.open(str(files / sound["sound"]["path"])) as wav:
        assert (wav.getnchannels(), wav.getframerate()) == (2, 8000)
        assert wav.readframes(50) == CLIP.astype("<i2").tobytes()
    gif = PILImage.open(files / clip["clip"]["path"])
    assert (gif.n_frames, gif.size) == (3, (6, 4))


@pytest.mark.anyio
async def test_mlflow_gets_wav_and_gif_artifacts(tmp_path: Path) -> None:
    async with MetricBus() as bus:
        sink = bus.add_sink(MLflowSink(dir=tmp_path, experiment="media"), isolate="none")
        await bus.publish_many(one_of_each())
    assert bus.stats()[sink].delivered == 2 and bus.stats()[sink].dropped == {}
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlruns.db'}")
    experiment = client.get_experiment_by_name("media")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.tags[ORIGIN_TAG] == "main"
    wav_path = client.download_artifacts(run.info.run_id, "audio/sound/step_1.wav", str(tmp_path / "dl"))
    with wave.open(wav_path) as wav:
        assert (wav.getnchannels(), wav.getframerate(), wav.readframes(50)) == (2, 8000, CLIP.astype("<i2").tobytes())
    gif_path = client.download_artifacts(run.info.run_id, "video/clip/step_2.gif", str(tmp_path / "dl"))
    gif = PILImage.open(gif_path)
    gif.seek(2)
    assert (gif.n_frames, gif.size) == (3, (6, 4))
