"""Seed 003's NeMo callbacks driven by a plain loop, read back from what they wrote.

SimpleLossLoggerCallback runs twice over the same loop: once handed tensorboardX's SummaryWriter
(what NeMo's `neural_factory.tb_writer` was) and once metricbus's; both logdirs are read with
TensorBoard's EventAccumulator and compared. EvaluatorCallback and WandbCallback write a W&B run
(offline, through producers.wandb), read back from its run file, and TensorBoard.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest
import tensorboardX
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from wandb_reader import read_run

import producers.wandb as wandb
from bus import InvalidConfig
from producers import MetricLogger, SummaryWriter
from producers.integrations import EvaluatorCallback, SimpleLossLoggerCallback, WandbCallback
from sinks import MemorySink

EPOCHS, STEPS_PER_EPOCH = 2, 10
TIMES = {"_timestamp", "_runtime", "_wandb", "epoch_time"}


@pytest.fixture(autouse=True)
def _offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("RANK", raising=False)
    for name in ("METRICBUS_PLAN", "METRICBUS_SINKS", "WANDB_DIR"):
        monkeypatch.delenv(name, raising=False)


def loss_at(step: int) -> torch.Tensor:
    return torch.tensor(1.0 / (step + 1))


def train(callbacks: list[Any], evaluate: Any = None) -> None:
    """NeMo's training action, as a plain loop: the hooks in NeMo's order."""
    step = 0
    for callback in callbacks:
        callback.on_action_start()
    for epoch in range(EPOCHS):
        for callback in callbacks:
            callback.on_epoch_start(epoch)
        for _ in range(STEPS_PER_EPOCH):
            for callback in callbacks:
                callback.on_iteration_start(step)
            values = {"loss": loss_at(step), "sample": torch.linspace(0, 1, 16) * step}
            for callback in callbacks:
                callback.on_iteration_end(step, values, learning_rate=0.1 * 0.9**epoch, evaluate=evaluate)
            step += 1
        for callback in callbacks:
            callback.on_epoch_end(epoch, step - 1)
    for callback in callbacks:
        callback.on_action_end(step - 1, evaluate=evaluate)


def _logdir(path: Path) -> dict[str, Any]:
    """Every scalar, histogram and text tag of a logdir: {tag: [(step, value or summary)]}."""
    acc = EventAccumulator(str(path), size_guidance={"scalars": 0, "histograms": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()
    out: dict[str, Any] = {}
    for tag in tags["scalars"]:
        out[tag] = [(e.step, round(e.value, 6) if "time" not in tag else "t") for e in acc.Scalars(tag)]
    for tag in tags["histograms"]:
        out[tag] = [(e.step, e.histogram_value.num, round(e.histogram_value.sum, 4)) for e in acc.Histograms(tag)]
    for tag in tags["tensors"]:
        out[tag] = [(e.step, e.tensor_proto.string_val) for e in acc.Tensors(tag)]
    return out


def test_simple_loss_logger_writes_what_nemo_wrote_with_tensorboardx(tmp_path: Path) -> None:
    printed: dict[str, list[Any]] = {"tensorboardX": [], "metricbus": []}

    def log_to_tb(writer: Any, tensors: list[Any], step: int) -> None:
        writer.add_scalar("Train_Loss_2x", tensors[0] * 2, step)
        writer.add_histogram("Train_Sample", tensors[1], step)
        writer.add_text("Train_Note", f"step {step}", step)

    for name, writer in (
        ("tensorboardX", tensorboardX.SummaryWriter(str(tmp_path / "tensorboardX"))),
        ("metricbus", SummaryWriter(str(tmp_path / "metricbus"))),
    ):
        callback = SimpleLossLoggerCallback(
            tensors=["loss", "sample"],
            print_func=lambda tensors, out=printed[name]: out.append(float(tensors[0])),
            get_tb_values=lambda tensors: [("Train_Loss", tensors[0])],
            log_to_tb_func=log_to_tb,
            step_freq=5,
            tb_writer=writer,
        )
        train([callback])  # on_action_end closes the writer, as NeMo did

    assert printed["metricbus"] == printed["tensorboardX"] == [float(loss_at(s)) for s in (0, 5, 10, 15)]
    ours, theirs = _logdir(tmp_path / "metricbus"), _logdir(tmp_path / "tensorboardX")
    assert ours == theirs
    assert ours["Train_Loss"] == [(s, round(float(loss_at(s)), 6)) for s in (0, 5, 10, 15)]
    assert ours["misc/epoch"] == [(9, 0.0), (19, 1.0)] and [s for s, _ in ours["misc/step_time"]] == [0, 5, 10, 15]
    assert [s for s, *_ in ours["Train_Sample"]] == [0, 5, 10, 15]


def test_evaluator_and_wandb_callbacks_fill_one_wandb_run_and_tensorboard(tmp_path: Path) -> None:
    args = argparse.Namespace(lr=0.1, batch_size=8, model="tiny")
    batches_seen: list[int] = []

    def per_batch(values: dict[str, Any], global_vars: dict[str, Any]) -> None:
        assert values["IS_FROM_DIST_EVAL"] is False
        global_vars.setdefault("eval_loss", []).extend(float(v) for v in values["eval_loss"])

    def at_end(global_vars: dict[str, Any]) -> dict[str, Any]:
        batches_seen.append(len(global_vars["eval_loss"]))  # cleared before every evaluation
        return {"eval_loss": torch.tensor(sum(global_vars["eval_loss"]) / len(global_vars["eval_loss"]))}

    def evaluate() -> list[dict[str, Any]]:
        return [{"eval_loss": torch.tensor(0.5 + i / 10)} for i in range(3)]

    writer = SummaryWriter(str(tmp_path / "tb"))
    evaluator = EvaluatorCallback(
        ["eval_loss"], per_batch, at_end, tb_writer=writer, eval_step=8, wandb_name="nemo-run", wandb_project="nemo"
    )
    logger = WandbCallback(["loss"], wandb_name="nemo-run", wandb_project="nemo", args=args, update_freq=5)
    train([logger, evaluator], evaluate=evaluate)
    run = wandb.run
    assert run is not None and (run.name, run.project) == ("nemo-run", "nemo")
    wandb.finish()
    writer.close()

    assert batches_seen == [3, 3, 3, 3]  # at steps 0, 8, 16 and the final evaluation at 19
    (path,) = tmp_path.rglob("*.wandb")
    written = read_run(path)
    assert written.name == "nemo-run"
    assert {k: written.config[k] for k in ("lr", "batch_size", "model")} == vars(args)
    rows = {row["_step"]: {k: v for k, v in row.items() if k not in TIMES} for row in written.history}
    eval_loss = pytest.approx(0.6)
    assert rows == {
        0: {"_step": 0, "loss": pytest.approx(1.0), "LR": pytest.approx(0.1), "eval_loss": eval_loss},
        5: {"_step": 5, "loss": pytest.approx(1 / 6), "LR": pytest.approx(0.1)},
        8: {"_step": 8, "eval_loss": eval_loss},
        9: {"_step": 9, "epoch": 0},
        10: {"_step": 10, "loss": pytest.approx(1 / 11), "LR": pytest.approx(0.09)},
        15: {"_step": 15, "loss": pytest.approx(1 / 16), "LR": pytest.approx(0.09)},
        16: {"_step": 16, "eval_loss": eval_loss},
        19: {"_step": 19, "epoch": 1, "eval_loss": eval_loss},
    }
    assert all("epoch_time" in row for row in written.history if "epoch" in row)
    tb = _logdir(tmp_path / "tb")
    assert tb["eval_loss"] == [(s, 0.6) for s in (0, 8, 16, 19)]


def test_tb_writer_func_gets_the_writer_the_returned_dict_and_the_step(tmp_path: Path) -> None:
    calls: list[tuple[Any, int]] = []

    def tb_writer_func(writer: Any, returned: dict[str, Any], step: int) -> None:
        calls.append((returned, step))
        writer.add_scalars("eval", returned, step)  # instead of one scalar per key

    memory = MemorySink()
    with MetricLogger(sinks=[memory]) as log:
        evaluator = EvaluatorCallback(
            ["acc"], lambda v, g: g.setdefault("acc", []).extend(v["acc"]), lambda g: {"acc": max(g["acc"])},
            tb_writer=SummaryWriter(logger=log), tb_writer_func=tb_writer_func, eval_step=4,
        )  # fmt: skip
        for step in range(9):
            evaluator.on_iteration_end(step, evaluate=[{"acc": 0.5}, {"acc": 0.75 + step / 100}])
    assert calls == [({"acc": 0.75}, 0), ({"acc": 0.79}, 4), ({"acc": 0.83}, 8)]
    # add_scalars: the scalar "eval" in the series (run) eval/acc, as tensorboardX draws it
    assert [(e.step, e.value) for e in memory.events if getattr(e, "name", "") == "eval"] == [
        (0, 0.75),
        (4, 0.79),
        (8, 0.83),
    ]


def test_only_rank_zero_writes_and_bad_settings_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    memory = MemorySink()
    with MetricLogger(sinks=[memory]) as log:
        monkeypatch.setenv("RANK", "1")
        callback = SimpleLossLoggerCallback(["loss"], get_tb_values=lambda t: [("loss", t[0])], step_freq=1)
        callback._swriter = SummaryWriter(logger=log)
        for step in range(3):
            callback.on_iteration_end(step, [loss_at(step)])
        monkeypatch.setenv("RANK", "0")
        callback.on_iteration_end(3, [loss_at(3)])
    assert [(e.step, e.name) for e in memory.events] == [(3, "loss")]
    with pytest.raises(InvalidConfig, match="step_freq"):
        SimpleLossLoggerCallback(["loss"], step_freq=0)
    with pytest.raises(InvalidConfig, match="eval_step"):
        EvaluatorCallback(["x"], None, None, eval_step=0)
    with pytest.raises(InvalidConfig, match="evaluation pass"):
        EvaluatorCallback(["x"], None, None, eval_step=1).on_iteration_end(0)
    with pytest.raises(InvalidConfig, match="2 values"):
        SimpleLossLoggerCallback(["loss"], step_freq=1).on_iteration_end(0, [1.0, 2.0])
