"""`metricbus replay`: logs written by the real sinks, replayed into CSV / JSONL / TensorBoard and
read back with csv, read_jsonl and TensorBoard's EventAccumulator, value for value."""

from __future__ import annotations

import csv
import io
import math
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import msgspec
import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2
from tensorboardX.proto.event_pb2 import Event as EventProto
from tensorboardX.proto.event_pb2 import SessionLog
from tensorboardX.proto.summary_pb2 import Summary

import sinks
from bus import (
    DEFAULT_ORIGIN,
    Context,
    Event,
    Histogram,
    Hparams,
    InvalidConfig,
    MetricBus,
    Metrics,
    Origin,
    Scalar,
    Sink,
    Text,
)
from producers import _replay
from producers._cli import main
from producers._replay import origin_from_run, replay, sink_from_spec
from sinks import CsvSink, JsonlSink, TensorBoardSink, encode_record, read_jsonl
from tests.helpers import normalized

ROOT = Path(__file__).resolve().parents[1]
EVERYTHING = {"scalars": 0, "histograms": 0, "tensors": 0, "compressedHistograms": 0}
ORIGINS = [
    DEFAULT_ORIGIN,
    Origin(site="site-1"),
    Origin(site="site-1", rank=0),
    Origin(site="site-2", node="node-a", rank=3),
]


def f32(x: float) -> float:
    return float(np.float32(x)) if math.isfinite(x) else x


def write(events: Sequence[Event], *targets: Sink) -> None:
    """Write `events` with the real sinks, through a MetricBus."""

    async def run() -> None:
        async with MetricBus() as bus:
            for sink in targets:
                bus.add_sink(sink, isolate="none", max_batch=100)
            await bus.publish_many(events)

    anyio.run(run)


def recorded(*, contexts: bool = True) -> list[Event]:
    """Every event kind from four origins; wall times and values that float32 cannot hold."""
    events: list[Event] = []
    for i in range(120):
        origin = ORIGINS[i % len(ORIGINS)]
        t = 1_700_000_000.0 + i * 0.001 + 1e-7
        context = Context(epoch=i // 40, task="train") if contexts and i % 3 == 0 else None
        events.append(Scalar("train/loss", 1 / (i + 1), step=i, wall_time=t, origin=origin, context=context))
        events.append(Metrics({"val/acc": i / 7, "val/lr": 0.1 * 0.99**i}, step=i, wall_time=t + 0.5, origin=origin))
    site = ORIGINS[1]
    events += [
        Scalar("odd, name", math.nan, step=200, wall_time=1_700_000_001.25, origin=site),
        Scalar("odd, name", -math.inf, step=2**40, wall_time=1_700_000_001.5, origin=site),
        Metrics({"one/value": 2.5}, step=3, wall_time=1_700_000_001.75, origin=site),
        Histogram("weights", 5, bucket_limits=(0.0, 1.0, 2.5, 3.0), bucket_counts=(1, 0, 4, 2), origin=site),
        Text("notes", "warm-up *done*, ünïcødé", step=7, wall_time=1_700_000_002.0, origin=site),
        Hparams({"lr": 0.01, "optimizer": "adam", "amp": True}, {"hp/acc": 0.93}, wall_time=1.7e9 + 3, origin=site),
    ]
    return events


def run_dir(logdir: Path, origin: Origin) -> Path:
    return logdir if origin == DEFAULT_ORIGIN else logdir / origin.label


def load(directory: Path) -> EventAccumulator:
    acc = EventAccumulator(str(directory), size_guidance=EVERYTHING)
    acc.Reload()
    return acc


def scalar_points(events: Sequence[Event], origin: Origin) -> dict[str, list[tuple[int, float, float]]]:
    """(step, wall_time, value) per name of the Scalar/Metrics events of one origin."""
    points: dict[str, list[tuple[int, float, float]]] = {}
    for e in events:
        if e.origin == origin and isinstance(e, (Scalar, Metrics)):
            values = {e.name: e.value} if isinstance(e, Scalar) else e.values
            for name, value in values.items():
                points.setdefault(name, []).append((e.step, e.wall_time, value))
        elif e.origin == origin and isinstance(e, Hparams):  # TensorBoard keeps its metrics as scalars
            for name, value in e.metrics.items():
                points.setdefault(name, []).append((e.step, e.wall_time, value))
    return points


def tb_points(acc: EventAccumulator) -> dict[str, list[tuple[int, float, float]]]:
    return {tag: [(s.step, s.wall_time, s.value) for s in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def as_f32(points: dict[str, list[tuple[int, float, float]]]) -> object:
    return normalized({tag: [(s, t, f32(v)) for s, t, v in series] for tag, series in points.items()})


# ---- JSONL -> CSV, JSONL, TensorBoard ----


def test_jsonl_log_replays_exactly_into_csv_jsonl_and_tensorboard(tmp_path: Path) -> None:
    events = recorded()
    source = tmp_path / "run.jsonl"
    write(events, JsonlSink(source))
    csv_out, jsonl_out, tb_out = tmp_path / "out.csv", tmp_path / "out.jsonl", tmp_path / "tb"
    stats = replay([source], [CsvSink(csv_out), JsonlSink(jsonl_out), (TensorBoardSink(tb_out), {"isolate": "none"})])

    assert stats.ok and stats.events == len(events) and stats.bad == 0
    assert normalized(read_jsonl(jsonl_out)) == normalized(events)  # every field of every kind

    with open(csv_out, newline="") as f:
        rows = [
            (float(r["wall_time"]), r["origin"], int(r["step"]), r["name"], float(r["value"]), r["epoch"], r["task"])
            for r in csv.DictReader(f)
        ]
    expected = []
    for e in events:
        if isinstance(e, (Scalar, Metrics)):
            epoch, task = (str(e.context.epoch), e.context.task) if e.context else ("", "")
            for name, value in ({e.name: e.value} if isinstance(e, Scalar) else e.values).items():
                expected.append((e.wall_time, e.origin.label, e.step, name, value, epoch, task))
    assert normalized(rows) == normalized(expected)

    for origin in ORIGINS:
        acc = load(run_dir(tb_out, origin))
        assert as_f32(tb_points(acc)) == as_f32(scalar_points(events, origin)), origin
    acc = load(tb_out / "site-1")
    (hist,) = acc.Histograms("weights")
    assert list(hist.histogram_value.bucket_limit) == [0.0, 1.0, 2.5, 3.0]
    assert list(hist.histogram_value.bucket) == [1, 0, 4, 2]
    (text,) = acc.Tensors("notes/text_summary")
    assert text.tensor_proto.string_val == ["warm-up *done*, ünïcødé".encode()]


# ---- TensorBoard -> JSONL, TensorBoard ----


def as_tensorboard_keeps_it(event: Event) -> list[Event]:
    """What a TensorBoard run holds of an event, as replay gives it back: float32 scalar values,
    Metrics of one value as a Scalar, raw histogram values as TensorBoardSink's 64 bins, Hparams
    params as TensorBoard keeps them (numbers as floats) and their metrics as scalars."""
    head: dict[str, Any] = {"step": event.step, "wall_time": event.wall_time, "origin": event.origin}
    match event:
        case Scalar():
            return [Scalar(event.name, f32(event.value), **head)]
        case Metrics() if len(event.values) == 1:
            ((name, value),) = event.values.items()
            return [Scalar(name, f32(value), **head)]
        case Metrics():
            return [Metrics({k: f32(v) for k, v in event.values.items()}, **head)]
        case Histogram(values=None):
            return [event]
        case Histogram():
            counts, edges = np.histogram(np.asarray(event.values), bins=64)
            limits, bins = tuple(edges[1:].tolist()), tuple(counts.tolist())
            return [Histogram(event.name, bucket_limits=limits, bucket_counts=bins, **head)]
        case Text():
            return [event]
        case Hparams():
            params = {k: float(v) if type(v) is int else v for k, v in event.params.items()}
            metrics = [Scalar(k, f32(v), **head) for k, v in event.metrics.items()]
            return [Hparams(params, **head), *metrics]
    raise AssertionError(event)


@pytest.fixture
def logdir(tmp_path: Path) -> tuple[Path, list[Event]]:
    """TensorBoard runs of four origins written by TensorBoardSink, and what was written."""
    events = recorded(contexts=False)
    values = tuple(np.random.default_rng(0).normal(size=500).tolist())
    raw = Histogram("acts", 9, values=values, wall_time=1.7e9 + 9, origin=ORIGINS[2])
    events += [raw, Hparams({"layers": 4, "opt": "sgd"}, step=3, wall_time=1.7e9 + 4)]
    write(events, TensorBoardSink(tmp_path / "logdir"))
    return tmp_path / "logdir", events


def test_tensorboard_runs_replay_with_their_origins_steps_wall_times_and_values(
    logdir: tuple[Path, list[Event]], tmp_path: Path
) -> None:
    source, events = logdir
    stats = replay([source], [JsonlSink(tmp_path / "out.jsonl")])
    assert stats.ok and stats.bad == 0 and stats.sources[0].skipped == {}
    replayed = read_jsonl(tmp_path / "out.jsonl")
    assert stats.events == len(replayed)
    for origin in ORIGINS:  # runs are replayed one after another, each in the order it was written
        expected = [kept for e in events if e.origin == origin for kept in as_tensorboard_keeps_it(e)]
        assert normalized([e for e in replayed if e.origin == origin]) == normalized(expected), origin


def test_tensorboard_runs_replay_into_tensorboard_as_they_were(
    logdir: tuple[Path, list[Event]], tmp_path: Path
) -> None:
    source, _ = logdir
    out = tmp_path / "copy"
    assert replay([source], [(TensorBoardSink(out), {"isolate": "none"})]).ok
    for origin in ORIGINS:
        before, after = load(run_dir(source, origin)), load(run_dir(out, origin))
        assert normalized(tb_points(after)) == normalized(tb_points(before)) != {}
        assert before.Tags()["histograms"] == after.Tags()["histograms"]
        for tag in before.Tags()["histograms"]:
            old, new = before.Histograms(tag), after.Histograms(tag)
            assert [(h.step, h.wall_time) for h in new] == [(h.step, h.wall_time) for h in old]
            assert [h.histogram_value.bucket for h in new] == [h.histogram_value.bucket for h in old]
            assert [h.histogram_value.bucket_limit for h in new] == [h.histogram_value.bucket_limit for h in old]
    texts = [t.tensor_proto.string_val for t in load(out / "site-1").Tensors("notes/text_summary")]
    assert texts == [["warm-up *done*, ünïcødé".encode()]]
    start = plugin_data_pb2.HParamsPluginData.FromString(
        load(out).PluginTagToContent("hparams")["_hparams_/session_start_info"]
    ).session_start_info
    assert {k: v.number_value or v.string_value for k, v in start.hparams.items()} == {"layers": 4.0, "opt": "sgd"}


def test_unsupported_and_torn_tensorboard_records_are_counted_and_the_rest_replayed(tmp_path: Path) -> None:
    events = [Scalar("loss", i / 10, step=i, wall_time=1e9 + i) for i in range(50)]
    write(events, TensorBoardSink(tmp_path / "tb"))
    (file,) = (tmp_path / "tb").glob("events.out.tfevents.*")
    image = Summary(value=[Summary.Value(tag="sample", image=Summary.Image(height=1, width=1))])
    records = [
        EventProto(wall_time=2e9, step=50, summary=image),
        EventProto(wall_time=2e9, session_log=SessionLog(status=SessionLog.START)),
        EventProto(wall_time=2e9, step=51, summary=Summary(value=[Summary.Value(tag="late", simple_value=1.0)])),
    ]
    torn = encode_record(records.pop().SerializeToString())[:-5]  # no crc: its writer was killed mid-write
    with open(file, "ab") as f:
        f.write(b"".join(encode_record(r.SerializeToString()) for r in records) + torn)
    memory = sinks.MemorySink()
    stats = replay([file], [memory])  # an event file by itself: the default origin's run
    expected = [Scalar(e.name, f32(e.value), step=e.step, wall_time=e.wall_time) for e in events]
    assert normalized(memory.events) == normalized(expected)
    (source,) = stats.sources
    assert source.skipped == {"image": 1, "session_log": 1}
    assert source.bad == 1 and source.first_bad[0].position == 54  # file_version, 50 scalars, image, session_log
    assert "torn or corrupt record" in source.first_bad[0].reason


@pytest.mark.parametrize(
    ("run", "origin"),
    [
        ("", DEFAULT_ORIGIN),
        ("site-1", Origin(site="site-1")),
        ("site-1/rank0", Origin(site="site-1", rank=0)),
        ("site-2/node-a/rank12", Origin(site="site-2", node="node-a", rank=12)),
        ("rank3", Origin(rank=3)),
        ("main", Origin(site="main")),  # not the default origin: that one is the logdir itself
        ("rank01", Origin(site="rank01")),  # a label never writes rank01: a name
        ("exp/seed0/train", Origin(site="exp", node="seed0.train")),
        ("exp 1/tr@in", Origin(site="exp_1", node="tr_in")),
        ("node=node0/rank3", Origin(node="node0", rank=3)),
        ("site=main", Origin(site="main")),
        ("a/node=rank0", Origin(site="a", node="rank0")),
    ],
)
def test_tensorboard_runs_map_back_to_origins(run: str, origin: Origin) -> None:
    assert origin_from_run(run) == origin


def test_every_run_tensorboard_sink_writes_maps_back_to_its_origin() -> None:
    for site in ("", "a", "site-1", "Site_2.x", "main", "rank0", "rank01"):
        for node in ("", "n", "node-7", "main", "rank3"):
            for rank in (None, 0, 1, 65):
                origin = Origin(site=site, node=node, rank=rank)
                if origin != DEFAULT_ORIGIN:  # the default origin's run is the logdir itself
                    assert origin_from_run(origin.label) == origin


# ---- bad input ----


def good_line(step: int) -> bytes:
    return msgspec.json.encode(Scalar("loss", step / 2, step=step, wall_time=1e9 + step)) + b"\n"


@pytest.mark.parametrize("block", [_replay._BLOCK, 50], ids=["one-block", "lines-across-blocks"])
def test_bad_lines_are_counted_with_their_line_numbers_and_the_rest_replayed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block: int
) -> None:
    monkeypatch.setattr(_replay, "_BLOCK", block)
    source = tmp_path / "torn.jsonl"
    invalid = b'{"kind":"scalar","name":"loss","value":1.0,"step":-1,"wall_time":1.0}\n'
    torn = good_line(6)[:30]  # the writer was killed mid-line: no newline after it
    source.write_bytes(good_line(0) + good_line(1) + b"garbage \x00 line\n" + b"\n" + invalid + good_line(4) + torn)
    memory, bar = sinks.MemorySink(), io.StringIO()
    stats = replay([source], [memory], progress=bar)

    assert memory.values("loss") == [(0, 0.0), (1, 0.5), (4, 2.0)]
    assert stats.ok and stats.events == 3
    (report,) = stats.sources
    assert report.bad == 3 and [b.position for b in report.first_bad] == [3, 5, 7]
    assert all(b.file == str(source) for b in report.first_bad)
    garbage, step, last = (b.reason for b in report.first_bad)
    assert "malformed" in garbage and "step=-1" in step and last.startswith("torn last line")
    assert source.name in bar.getvalue()  # the progress bar names the source


def test_bad_sources_and_targets_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hi")
    (tmp_path / "empty").mkdir()
    for source, message in [
        (tmp_path / "missing.jsonl", "no such file"),
        (tmp_path / "notes.txt", re.escape("not a *.jsonl file")),
        (tmp_path / "empty", "without TensorBoard event files"),
    ]:
        with pytest.raises(InvalidConfig, match=message):
            replay([source], [sinks.MemorySink()])
    for spec, message in [("csv", "expected KIND:WHERE"), ("orc:x.orc", "unknown kind 'orc'")]:
        with pytest.raises(InvalidConfig, match=message):
            sink_from_spec(spec)


def test_shorthands_make_their_sinks_and_a_missing_mlflow_sink_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert isinstance(sink_from_spec(f"csv:{tmp_path}/a.csv"), CsvSink)
    assert isinstance(sink_from_spec(f"jsonl:{tmp_path}/a.jsonl"), JsonlSink)
    assert isinstance(sink_from_spec(f"tensorboard:{tmp_path}/tb"), TensorBoardSink)
    wandb = sink_from_spec("wandb:my-project")
    assert isinstance(wandb, sinks.WandbSink) and (wandb.project, wandb.mode) == ("my-project", "offline")

    made: list[dict[str, object]] = []

    def fake_mlflow_sink(**kwargs: object) -> Sink:
        made.append(kwargs)
        return sinks.MemorySink()

    def lookup(name: str) -> object:  # sinks' lazy __getattr__, with the MLflowSink of each case
        if name != "MLflowSink" or mlflow is None:
            raise AttributeError(name)
        if isinstance(mlflow, Exception):
            raise mlflow
        return mlflow

    mlflow: object = fake_mlflow_sink
    monkeypatch.delitem(vars(sinks), "MLflowSink", raising=False)  # loaded already: look it up again
    monkeypatch.setattr(sinks, "__getattr__", lookup)
    assert isinstance(sink_from_spec("mlflow:http://127.0.0.1:5000"), sinks.MemorySink)
    assert made == [{"tracking_uri": "http://127.0.0.1:5000"}]
    mlflow = None
    with pytest.raises(InvalidConfig, match=r"no sinks\.MLflowSink; declare an MLflow sink in a plan"):
        sink_from_spec("mlflow:file:./mlruns")
    mlflow = ImportError("No module named 'mlflow'")
    with pytest.raises(InvalidConfig, match=r"No module named 'mlflow'.*is mlflow installed"):
        sink_from_spec("mlflow:file:./mlruns")


# ---- the command ----


def test_cli_replays_a_jsonl_log_and_tensorboard_runs_end_to_end(
    logdir: tuple[Path, list[Event]], tmp_path: Path
) -> None:
    tb_source, _ = logdir
    jsonl_source = tmp_path / "run.jsonl"
    events = recorded()
    write(events, JsonlSink(jsonl_source))
    out_csv, out_jsonl = tmp_path / "out.csv", tmp_path / "out.jsonl"
    command = [sys.executable, "-m", "producers._cli", "replay", str(jsonl_source), str(tb_source)]
    proc = subprocess.run(
        [*command, "--to", f"csv:{out_csv}", "--to", f"jsonl:{out_jsonl}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    replayed = read_jsonl(out_jsonl)
    assert normalized(replayed[: len(events)]) == normalized(events)  # sources in the order given
    from_tb = len(replayed) - len(events)
    assert from_tb > 0 and f"replayed {len(replayed):,} events from 2 source(s)" in proc.stderr
    assert "every sink got every event" in proc.stderr
    assert "replay: sinks" in proc.stdout and f"{len(replayed):,}" in proc.stdout
    with open(out_csv, newline="") as f:
        assert sum(1 for _ in csv.DictReader(f)) > 0


def test_cli_exits_1_when_a_sink_does_not_get_every_event(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "run.jsonl"
    write(recorded()[:10], JsonlSink(source))
    good, bad = tmp_path / "good.jsonl", tmp_path / "theirs.csv"
    bad.write_bytes(b"a,b,c\r\n1,2,3\r\n")  # another program's CSV: the sink fails at its open
    assert main(["replay", str(source), "--to", f"jsonl:{good}", "--to", f"csv:{bad}"]) == 1
    out = capsys.readouterr()
    assert "failed" in out.out and "some sinks did not get every event" in out.err
    assert len(read_jsonl(good)) == 10  # the other sink still got everything
    assert bad.read_bytes() == b"a,b,c\r\n1,2,3\r\n"  # and nothing of theirs was touched

    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(SystemExit) as exc:  # a path that can never be written: a usage error, at once
        main(["replay", str(source), "--to", f"csv:{tmp_path / 'file' / 'out.csv'}"])
    assert exc.value.code == 2 and "not a folder" in capsys.readouterr().err

    with pytest.raises(SystemExit) as exc:  # a source that is not there: a usage error, nothing written
        main(["replay", str(tmp_path / "nope.jsonl"), "--to", f"csv:{tmp_path}/x.csv"])
    assert exc.value.code == 2 and "no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # --plan and --to exclude each other
        main(["replay", str(source), "--to", f"csv:{tmp_path}/x.csv", "--plan", "p.toml"])


def test_a_plan_files_sinks_get_every_event_whatever_their_when_full(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "run.jsonl"
    events = recorded()
    write(events, JsonlSink(source))
    plan = tmp_path / "plan.toml"
    plan.write_text(
        f"""
[[sinks]]
template = "sinks.CsvSink"
settings = {{ path = "{(tmp_path / "plan.csv").as_posix()}", layout = "wide" }}
options = {{ when_full = "drop_newest", capacity = 10, max_batch = 5 }}  # live settings: lossy

[[sinks]]
template = "sinks.JsonlSink"
settings = {{ path = "{(tmp_path / "plan.jsonl").as_posix()}" }}
"""
    )
    assert main(["replay", str(source), "--plan", str(plan)]) == 0
    assert normalized(read_jsonl(tmp_path / "plan.jsonl")) == normalized(events)
    with open(tmp_path / "plan.csv", newline="") as f:
        wide = list(csv.DictReader(f))
    steps = {(e.origin.label, e.step) for e in events if isinstance(e, (Scalar, Metrics))}
    assert {(r["origin"], int(r["step"])) for r in wide} == steps  # one row per (origin, step): none dropped
    assert "csv:" in capsys.readouterr().out
