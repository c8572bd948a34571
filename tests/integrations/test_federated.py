"""Federated adapters: OpenFL's callback and plan file, NVFlare site writers, itwinai's logger."""

from __future__ import annotations

import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from bus import Context, Histogram, Hparams, InvalidConfig, Scalar, Text
from producers import MetricLogger
from producers._plan import load_plan
from producers.integrations import ItwinaiLogger, NVFlareWriter, openfl_callback
from sinks import CsvSink, MemorySink, TensorBoardSink, WandbSink
from tests.wandb_reader import read_runs

# ---- OpenFL ----


def test_openfl_callback_publishes_node_task_and_round() -> None:
    sink = MemorySink()
    with MetricLogger(sinks=[sink]) as log:
        write_metric = openfl_callback(log)
        write_metric("collaborator one", "aggregated_model_validation", "acc", np.array([0.81]), 3)
        write_metric("col2", "train", "loss", np.float32(0.25), 4)
    first, second = sink.events
    assert isinstance(first, Scalar) and isinstance(second, Scalar)
    assert (first.origin.node, first.name, first.value, first.step) == ("collaborator_one", "acc", 0.81, 3)
    assert first.context == Context(task="aggregated_model_validation", round=3)
    assert (second.origin.label, second.value, second.context) == ("col2", 0.25, Context(task="train", round=4))


def _plan(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "plan.toml"
    path.write_text(textwrap.dedent(body))
    return path


def test_a_plan_file_declares_sinks_and_the_metric_callback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_callbacks.py").write_text(
        "calls = []\ndef write_metric(node_name, task_name, metric_name, metric, round_number, prefix=''):\n"
        "    calls.append((prefix + node_name, task_name, metric_name, metric, round_number))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    plan = load_plan(
        _plan(
            tmp_path,
            f"""
            [logger]
            shutdown_timeout = 5.0

            [[sinks]]
            template = "sinks.CsvSink"
            settings = {{ path = "{tmp_path / "m.csv"}", layout = "wide" }}
            options = {{ when_full = "drop_oldest", capacity = 500 }}

            [log_metric_callback]
            template = "my_callbacks.write_metric"
            settings = {{ prefix = "node:" }}
            """,
        )
    )
    assert isinstance(plan.sinks[0][0], CsvSink) and plan.sinks[0][1] == {"when_full": "drop_oldest", "capacity": 500}
    with plan.logger() as log:
        openfl_callback(log)("col1", "train", "loss", 0.5, 1)
    import my_callbacks  # type: ignore[import-not-found]

    assert my_callbacks.calls == [("node:col1", "train", "loss", 0.5, 1)]
    assert "loss" in (tmp_path / "m.csv").read_text()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('[[sinks]]\ntemplate = "no_such_module.Sink"', r"sinks\[0\]\.template: cannot import module 'no_such_module'"),
        ('[[sinks]]\ntemplate = "sinks.NoSuchSink"', r"sinks\[0\]\.template: module 'sinks' has no attribute"),
        ('[[sinks]]\ntemplate = "collections.OrderedDict"', r"sinks\[0\]\.template: .* not a Sink"),
        ('[[sinks]]\ntemplate = "sinks.CsvSink"\nsettings = { nope = 1 }', r"sinks\[0\]\.settings: .*failed"),
        (
            '[[sinks]]\ntemplate = "sinks.CsvSink"\nsettings = { path = "m.csv", layout = "tall" }',
            r"sinks\[0\]\.settings",
        ),
        ('[[sinks]]\ntemplate = "sinks.MemorySink"\noptions = { when_full = "explode" }', r"sinks\[0\]\.options"),
        ('[[sinks]]\ntemplate = "CsvSink"', r"sinks\[0\]\.template: template must be a 'module\.Name'"),
        ('[log_metric_callback]\ntemplate = "math.pi"', r"log_metric_callback\.template: math\.pi is not callable"),
        ("[logger]\nspeed = 11", r"logger: unknown options \['speed'\]"),
        ("[loggers]\n", r"unknown sections \['loggers'\]"),
        ("this is = = not toml", r"not valid TOML"),
    ],
)
def test_bad_plans_name_the_key_at_fault(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(InvalidConfig, match=message):
        load_plan(_plan(tmp_path, body))


# ---- NVIDIA FLARE ----


def test_sites_become_one_tensorboard_run_and_one_wandb_run_each_in_one_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    sites = ["site-1", "site-2", "site-3"]
    log = MetricLogger()
    log.add_sink(TensorBoardSink(tmp_path / "tb"))
    log.add_sink(WandbSink(project="hello-pt", group="hello-pt", dir=tmp_path / "wb"))

    def site(name: str, offset: float) -> None:
        writer = NVFlareWriter(name, log)
        for rnd in range(5):
            writer.add_scalar("train_loss", 1.0 / (rnd + 1) + offset, rnd)
            writer.log({"val_acc": 0.5 + rnd / 10 + offset}, rnd)

    (tmp_path / "wb").mkdir()
    threads = [threading.Thread(target=site, args=(name, i / 100)) for i, name in enumerate(sites)]
    with log:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for i, name in enumerate(sites):
        acc = EventAccumulator(str(tmp_path / "tb" / name), size_guidance={"scalars": 0})
        acc.Reload()
        assert [round(e.value, 5) for e in acc.Scalars("train_loss")] == [
            round(float(np.float32(1.0 / (r + 1) + i / 100)), 5) for r in range(5)
        ]
    runs = read_runs(tmp_path / "wb")
    assert sorted(runs) == sites and {r.group for r in runs.values()} == {"hello-pt"}
    for i, name in enumerate(sites):
        rows = [r for r in runs[name].history if "val_acc" in r]
        assert [round(r["val_acc"], 9) for r in rows] == [round(0.5 + rnd / 10 + i / 100, 9) for rnd in range(5)]


# ---- itwinai ----


def test_itwinai_log_freq_int_logs_batches_0_5_10_and_calls_without_a_batch() -> None:
    sink = MemorySink()
    with ItwinaiLogger(sinks=[sink], log_freq=5) as logger:
        for batch in range(12):
            logger.log(batch / 10, "loss", batch_idx=batch)
        logger.log(0.9, "epoch_acc", step=0)  # no batch_idx: always logged
    assert [s for s, _ in sink.values("loss")] == [0, 5, 10]
    assert sink.values("epoch_acc") == [(0, 0.9)]


@pytest.mark.parametrize(("freq", "batches"), [("batch", list(range(6))), ("epoch", [])])
def test_itwinai_batch_and_epoch_frequencies(freq: str, batches: list[int]) -> None:
    sink = MemorySink()
    with ItwinaiLogger(sinks=[sink], log_freq=freq) as logger:  # type: ignore[arg-type]
        for batch in range(6):
            logger.log(1.0, "loss", batch_idx=batch)
        logger.log(2.0, "loss", step=99)
    assert [s for s, _ in sink.values("loss")] == [*batches, 99]


def test_itwinai_kinds_and_hyperparameters_reach_the_sinks() -> None:
    sink = MemorySink()
    with ItwinaiLogger(sinks=[sink], log_freq="batch") as logger:
        logger.save_hyperparameters({"optimizer": {"name": "adam", "lr": 1e-3}, "epochs": 3})
        logger.log("a note", "notes", kind="text", step=1)
        logger.log([0.1, 0.2, 0.3], "weights", kind="histogram", step=1)
        with pytest.raises(InvalidConfig):
            logger.log(1, "x", kind="image")  # type: ignore[arg-type]
    hp, text, hist = sink.events
    assert isinstance(hp, Hparams) and hp.params == {"optimizer/name": "adam", "optimizer/lr": 1e-3, "epochs": 3}
    assert isinstance(text, Text) and text.text == "a note"
    assert isinstance(hist, Histogram) and hist.values == (0.1, 0.2, 0.3)


def test_adapters_import_their_framework_only_when_used() -> None:
    import subprocess

    code = "import sys, producers.integrations as i; i.ItwinaiLogger; print('lightning' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
