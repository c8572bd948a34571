"""producers.wandb against real wandb: the same W&B script run both ways, in the same test, both
offline runs read back from their run files (tests/wandb_reader.py) and compared row by row.

Also: the rows reach the other sinks (CSV, TensorBoard, MLflow through METRICBUS_SINKS or a plan
file), every row is kept, a script that never calls finish loses nothing (both ways, in a
subprocess), and what metricbus does not map is refused with a typed error.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch
import wandb as real_wandb
from PIL import Image as PILImage
from wandb_reader import WandbRun, read_run

import producers.wandb as our_wandb
from bus import BusClosed, BusStateError, InvalidConfig, InvalidEvent

ROOT = Path(__file__).resolve().parents[1]
#: Keys wandb stamps on every row and summary with the time: they differ between any two runs.
TIMES = {"_timestamp", "_runtime", "_wandb"}


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    for name in ("METRICBUS_PLAN", "METRICBUS_SINKS", "WANDB_DIR", "WANDB_RUN_GROUP", "WANDB_PROJECT"):
        monkeypatch.delenv(name, raising=False)


def the_script(wandb: ModuleType, directory: Path) -> dict[str, Any]:
    """A W&B script using the calls people make; returns what it read back from the run."""
    args = argparse.Namespace(batch_size=32, optimizer="adam", resume_from=None)
    run = wandb.init(
        project="compare",
        dir=str(directory),
        mode="offline",
        config={"lr": 0.1, "layers": [64, 32], "opt": {"name": "sgd", "momentum": 0.9}, "seed": None},
        group="baseline",
        job_type="train",
        tags=["cnn", "small"],
        name="same-script",
    )
    wandb.config.update(args)
    wandb.config.epochs = 3
    wandb.config["dropout"] = 0.2
    wandb.define_metric("val/acc", summary="max")
    wandb.define_metric("epoch")
    wandb.define_metric("val/loss", step_metric="epoch")
    seen = {"config": dict(wandb.config.items()), "steps": []}
    for i in range(300):  # every row kept: no rate limit
        wandb.log({"train/loss": 1 / (i + 1), "lr": 0.1 * 0.99**i})
    seen["steps"].append(run.step)
    wandb.log({"partial": 1.0}, commit=False)  # merged into the next row
    wandb.log({"acc": 0.5})
    run.summary["acc"] = 0.99  # replaced by the next row's value, as in wandb
    wandb.log({"acc": 0.4})
    wandb.log({"x": 2.0}, step=310)  # an explicit step: pending until a higher step
    wandb.log({"y": 3.0}, step=310)
    wandb.log({"x": 9.0}, step=304)  # lower than the current step: ignored, with a warning
    wandb.log({"z": 1.0}, step=305, commit=True)  # ignored too, but run.step still counts it
    seen["steps"].append(run.step)
    for epoch in range(3):
        wandb.log({"val/acc": 0.5 + epoch / 10, "val/loss": 1.0 - epoch / 10, "epoch": epoch}, step=320 + epoch)
    wandb.log({"val/acc": 0.6, "note": "a string value"})
    run.log({"h": wandb.Histogram([1, 2, 3, 4, 10])})
    run.log({"h2": wandb.Histogram(np.arange(100), num_bins=10)})
    run.log({"h3": wandb.Histogram(np_histogram=np.histogram(np.linspace(0, 1, 50), bins=7))})
    gray = np.linspace(0, 200, 12 * 8).reshape(12, 8)
    rgba = PILImage.fromarray(np.arange(5 * 7 * 4, dtype=np.uint8).reshape(5, 7, 4), mode="RGBA")
    chw = torch.arange(3 * 6 * 4, dtype=torch.uint8).reshape(3, 6, 4)
    run.log({"img/hwc": wandb.Image(np.arange(48, dtype=np.uint8).reshape(4, 4, 3)), "img/gray": wandb.Image(gray)})
    run.log({"img/pil": wandb.Image(rgba), "img/torch": wandb.Image(chw)})
    wandb.log({})  # an empty row of its own
    wandb.log({"last": 1.0}, commit=False)  # pending at finish: committed by finish
    run.summary["best"] = 0.01
    wandb.summary.update({"final": {"k": [1, 2]}, "name": "done"})
    seen["steps"].append(run.step)
    run.finish()
    return seen


def _run_file(directory: Path) -> WandbRun:
    (path,) = directory.rglob("*.wandb")
    return read_run(path)


def _comparable(value: Any) -> Any:
    """A history or summary value with what differs between any two runs left out: the step
    number in a media file's name (wandb names it by its client-side counter)."""
    if isinstance(value, dict):
        out = {k: _comparable(v) for k, v in value.items() if k not in TIMES}
        if out.get("_type") == "image-file":
            path = out.pop("path")
            assert re.fullmatch(r"media/images/.+_\d+_" + out["sha256"][:20] + r"\.png", path), path
        return out
    return value


def test_a_wandb_script_gives_the_same_offline_run_with_producers_wandb(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    seen_real = the_script(real_wandb, tmp_path / "real")
    monkeypatch.setenv("METRICBUS_SINKS", f"csv:{tmp_path / 'ours.csv'}")  # ours also fills a CSV file
    seen_ours = the_script(our_wandb, tmp_path / "ours")

    real, ours = _run_file(tmp_path / "real"), _run_file(tmp_path / "ours")
    assert seen_ours == seen_real  # config as the script reads it, run.step along the way
    assert len(ours.history) == len(real.history) == 300 + 13
    for ours_row, real_row in zip(ours.history, real.history, strict=True):
        assert _comparable(ours_row) == _comparable(real_row), real_row["_step"]
    assert ours.config.keys() - TIMES == real.config.keys() - TIMES
    assert {k: ours.config[k] for k in ours.config.keys() - TIMES} == {
        k: real.config[k] for k in real.config.keys() - TIMES
    }
    assert _comparable(ours.summary) == _comparable(real.summary)
    assert (ours.name, ours.group, ours.job_type, ours.tags) == (real.name, real.group, real.job_type, real.tags)
    assert ours.summary["acc"] == 0.4 and ours.summary["val/acc"] == {
        "max": 0.6
    }  # 0.7 at step 322 was replaced in its row
    assert any("less than the current step 310" in r.getMessage() for r in caplog.records)

    with open(tmp_path / "ours.csv", newline="") as f:
        values = {(int(r["step"]), r["name"]): float(r["value"]) for r in csv.DictReader(f)}
    numbers = {
        (row["_step"], k): v
        for row in real.history
        for k, v in row.items()
        if k not in TIMES | {"_step"} and isinstance(v, (int, float))
    }
    assert values == numbers  # every number of every row, at its step


def test_a_script_that_never_finishes_keeps_every_row_both_ways(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import sys
        import {module} as wandb
        wandb.init(project="exit", dir=sys.argv[1], mode="offline", config={{"lr": 0.1}})
        for i in range(50):
            wandb.log({{"loss": 1 / (i + 1)}})
        wandb.log({{"pending": 1.0}}, commit=False)
        wandb.summary["best"] = 0.02
        """
    )
    runs = {}
    for module in ("wandb", "producers.wandb"):
        directory = tmp_path / module
        done = subprocess.run(
            [sys.executable, "-c", script.format(module=module), str(directory)],
            cwd=ROOT,
            # not the test process's wandb service (real wandb in-process tests leave one): its own
            env={**{k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}, "WANDB_SILENT": "true"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        runs[module] = _run_file(directory)
    ours, real = runs["producers.wandb"], runs["wandb"]
    assert [_comparable(r) for r in ours.history] == [_comparable(r) for r in real.history]
    assert _comparable(real.history[-1]) == {"_step": 50, "pending": 1}  # the row pending at exit
    assert _comparable(ours.summary) == _comparable(real.summary)
    assert ours.config["lr"] == real.config["lr"] == 0.1


def test_a_plan_file_sends_the_rows_to_tensorboard_csv_and_mlflow_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    plan = tmp_path / "plan.toml"
    plan.write_text(
        textwrap.dedent(
            f"""
            [logger]
            shutdown_timeout = 120.0  # MLflow's worker takes seconds to start on a busy machine

            [[sinks]]
            template = "sinks.TensorBoardSink"
            settings = {{ logdir = "{tmp_path / "tb"}" }}

            [[sinks]]
            template = "sinks.CsvSink"
            settings = {{ path = "{tmp_path / "m.csv"}", layout = "wide" }}

            [[sinks]]
            template = "sinks.MLflowSink"
            settings = {{ dir = "{tmp_path / "mlflow"}", experiment = "wb" }}
            """
        )
    )
    monkeypatch.setenv("METRICBUS_PLAN", str(plan))
    run = our_wandb.init(project="planned", dir=str(tmp_path), config={"lr": 0.1, "opt": {"name": "sgd"}})
    for step in range(20):
        our_wandb.log({"loss": 1 / (step + 1)})
    our_wandb.log({"acc": 0.9}, step=30)
    run.finish()

    tb = EventAccumulator(str(tmp_path / "tb"))
    tb.Reload()
    assert [(e.step, e.value) for e in tb.Scalars("loss")] == [(s, pytest.approx(1 / (s + 1))) for s in range(20)]
    assert [e.step for e in tb.Scalars("acc")] == [30]
    with open(tmp_path / "m.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [*range(20), 30]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow' / 'mlruns.db'}")
    (found,) = client.search_runs([client.get_experiment_by_name("wb").experiment_id])
    assert found.data.params == {"lr": "0.1", "opt.name": "sgd"}
    assert [(m.step, m.value) for m in client.get_metric_history(found.info.run_id, "loss")] == [
        (s, 1 / (s + 1)) for s in range(20)
    ]
    wandb_run = _run_file(tmp_path / "wandb")
    assert [r["_step"] for r in wandb_run.history] == [*range(20), 30]
    assert wandb_run.config["opt"] == {"name": "sgd"}


def test_mode_disabled_writes_no_wandb_run_but_the_other_sinks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.chdir(tmp_path)
    from sinks import JsonlSink, read_jsonl

    with our_wandb.init(project="off", sinks=[JsonlSink(tmp_path / "e.jsonl")], config={"lr": 0.1}) as run:
        assert run.disabled
        our_wandb.log({"loss": 0.5})
        run.summary["best"] = 0.5
    assert not list(tmp_path.rglob("*.wandb"))
    kinds = [type(e).__name__ for e in read_jsonl(tmp_path / "e.jsonl")]
    assert kinds == ["RunConfig", "Hparams", "Metrics", "RunSummary"]


def test_refused_with_a_typed_error_that_names_an_alternative(tmp_path: Path) -> None:
    with pytest.raises(BusStateError, match="init"):
        our_wandb.log({"loss": 1.0})
    with pytest.raises(BusStateError):
        our_wandb.config.lr = 0.1
    for name in ("Video", "Table", "Html", "Object3D"):
        with pytest.raises(InvalidEvent, match=r"not supported by metricbus: .*log"):
            getattr(our_wandb, name)(np.zeros(10))
    with pytest.raises(AttributeError, match=r"watch is not supported.*Histogram"):
        our_wandb.watch  # noqa: B018
    run = our_wandb.init(project="refused", dir=str(tmp_path), config={"lr": 0.1})
    try:
        for bad, match in (
            ({"flag": True}, "not a number"),
            ({"x": None}, "not a number"),
            ({"xs": [1, 2]}, "Histogram"),
            ({"t": torch.ones(3)}, "Histogram"),
            ({"_step": 3}, "wandb sets itself"),
            ({"img": real_wandb.Image(np.zeros((2, 2, 3), np.uint8))}, "producers.wandb.Image"),
            ({"x": float("nan"), 3: 1.0}, "str"),
        ):
            with pytest.raises(InvalidEvent, match=match):
                our_wandb.log(bad)
        with pytest.raises(InvalidEvent, match="step"):
            our_wandb.log({"x": 1.0}, step=-1)
        with pytest.raises(InvalidConfig, match="allow_val_change"):
            our_wandb.config.lr = 0.2  # as wandb's ConfigError
        our_wandb.config.update({"lr": 0.2}, allow_val_change=True)
        assert our_wandb.config.lr == 0.2
        with pytest.raises(InvalidEvent, match="boxes"):
            our_wandb.Image(np.zeros((2, 2, 3), np.uint8), boxes={"a": {}})
        our_wandb.log({"ok": torch.tensor(1.0), "train": {"loss": np.float32(0.5)}})  # nested: "train.loss"
        assert our_wandb.summary["ok"] == 1.0 and our_wandb.summary["train.loss"] == 0.5
        with pytest.raises(BusStateError, match="define_metric"):
            our_wandb.define_metric("late", summary="max")
    finally:
        run.finish()
    with pytest.raises(BusClosed, match="finished"):
        run.log({"x": 1.0})
    assert our_wandb.run is None


def test_audio_reaches_the_wandb_run_as_real_wandb_logs_it(tmp_path: Path) -> None:
    """wandb.Audio(samples, sample_rate): the same script both ways; each run's history holds the
    same audio file (the same sha256: byte for byte the same WAV), a sound of 4,000 frames."""
    import wave

    clip = 0.5 * np.sin(np.linspace(0.0, 40.0, 4_000))
    rows = []
    for module, where in ((real_wandb, "real"), (our_wandb, "ours")):
        run = module.init(project="audio", dir=str(tmp_path / where), mode="offline")
        run.log({"clip": module.Audio(clip, sample_rate=8_000)})
        run.finish()
        (row,) = [r["clip"] for r in _run_file(tmp_path / where).history if "clip" in r]
        rows.append(row)
        (path,) = (tmp_path / where).rglob("*.wav")
        with wave.open(str(path)) as f:
            assert (f.getframerate(), f.getnchannels(), f.getnframes()) == (8_000, 1, 4_000)
    assert rows[0]["_type"] == "audio-file" and rows[0] == rows[1]


def test_real_wandb_raises_on_a_changed_config_value_too(tmp_path: Path) -> None:
    run = real_wandb.init(project="check", dir=str(tmp_path), mode="offline", config={"lr": 0.1})
    try:
        with pytest.raises(Exception, match="allow_val_change"):
            real_wandb.config.lr = 0.2
    finally:
        run.finish()


def test_json_values_reach_every_sink_without_loss(tmp_path: Path) -> None:
    """RunConfig and RunSummary with NaN, None, nesting and unicode: W&B sets them as real wandb
    does, the other built-in sinks take them or are not sent them, and nothing is counted lost."""
    from sinks import ConsoleSink, CsvSink, JsonlSink, MemorySink, TensorBoardSink, read_jsonl

    memory = MemorySink()
    sinks = [CsvSink(tmp_path / "m.csv"), JsonlSink(tmp_path / "e.jsonl"), TensorBoardSink(tmp_path / "tb"), memory]
    sinks.append(ConsoleSink(file=open(os.devnull, "w")))  # noqa: SIM115
    odd = {"nan": math.nan, "none": None, "deep": {"a": [1, {"b": 'ü\n,"'}]}, "big": 2**62, "inf": -math.inf}
    real_run = real_wandb.init(project="json", dir=str(tmp_path / "real"), mode="offline", config=odd)
    real_run.log({"loss": 0.5})
    real_run.summary.update(odd)
    real_run.finish()
    with our_wandb.init(project="json", dir=str(tmp_path), sinks=sinks, config=odd) as run:
        our_wandb.log({"loss": 0.5})
        run.summary.update(odd)
        stats = run.logger.stats()
    assert all(s.balanced and not s.dropped for s in stats.values()), stats
    written, real = _run_file(tmp_path / "wandb"), _run_file(tmp_path / "real")
    assert _comparable(written.config) == _comparable(real.config)
    assert _comparable(written.summary) == _comparable(real.summary)
    assert written.config["deep"] == odd["deep"] and written.summary["inf"] == -math.inf
    assert written.summary["nan"] is None  # wandb writes a NaN in a summary or config as null
    kinds = [type(e).__name__ for e in read_jsonl(tmp_path / "e.jsonl")]
    assert kinds == ["RunConfig", "Hparams", "Metrics", "RunSummary"]
    with pytest.raises(InvalidEvent, match="int64"):
        run2 = our_wandb.init(project="json", dir=str(tmp_path), mode="disabled")
        try:
            run2.summary["huge"] = 2**70
        finally:
            run2.finish()


def test_the_module_lists_what_it_exports() -> None:
    for name in our_wandb.__all__:
        if name not in ("run",):
            assert getattr(our_wandb, name) is not None, name
    assert json.dumps(our_wandb.__all__)


@pytest.mark.anyio
async def test_wandb_step_logs_at_wandbs_own_step_and_counts_a_step_that_goes_back(tmp_path: Path) -> None:
    """WandbSink(wandb_step=True), under producers.wandb: rows at `_step`; an event whose step is
    below its run's last one (wandb would drop it without a word) is refused and counted."""
    from bus import MetricBus, Metrics, RunSummary
    from sinks import WandbSink

    sink = WandbSink(project="steps", dir=tmp_path, group="", run_name="r", run_id="steps1", wandb_step=True)
    async with MetricBus(raise_on_loss=False) as bus:
        name = bus.add_sink(sink, rate="none")
        batches = [[Metrics({"a": 1.0}, 3)], [Metrics({"b": 2.0}, 3), Metrics({"a": 3.0}, 5)], [Metrics({"a": 9.0}, 4)]]
        for batch in batches:
            await bus.publish_many(batch)
            await bus.flush()
        await bus.publish(RunSummary({"best": 1.0}, step=5))
    stats = bus.stats()[name]
    assert (stats.delivered, stats.dropped) == (4, {"rejected": 1})
    written = _run_file(tmp_path)
    assert [_comparable(r) for r in written.history] == [{"_step": 3, "a": 1, "b": 2}, {"_step": 5, "a": 3}]
    assert (written.name, written.group, written.summary["best"]) == ("r", "", 1)
