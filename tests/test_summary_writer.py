"""SummaryWriter: a tensorboardX script with only its import changed reads back the same."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorboardX
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import producers
from producers import MetricLogger, SummaryWriter
from sinks import MemorySink

EVERYTHING = {"scalars": 0, "histograms": 0, "tensors": 0}


def training_script(writer_class: Any, logdir: Path) -> None:
    """What a tensorboardX user writes; only the SummaryWriter class changes."""
    rng = np.random.default_rng(0)
    with writer_class(logdir) as writer:
        for step in range(30):
            writer.add_scalar("train/loss", 1.0 / (step + 1), step)
            writer.add_scalar("train/lr", np.float32(0.1 * 0.9**step), global_step=step)
            writer.add_scalars("accuracy", {"train": step / 30, "val": step / 40}, step)
            if step % 10 == 0:
                writer.add_histogram("weights", rng.normal(size=500), step)
                writer.add_text("notes", f"checkpoint at step {step}", step)
        writer.add_scalar("no_step", 3.0)


def runs(logdir: Path) -> dict[str, EventAccumulator]:
    out = {}
    for events in sorted(logdir.rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events.parent), size_guidance=EVERYTHING)
        acc.Reload()
        out[str(events.parent.relative_to(logdir))] = acc
    return out


def test_same_script_same_tensorboard_data_as_tensorboardx(tmp_path: Path) -> None:
    training_script(tensorboardX.SummaryWriter, tmp_path / "tbx")
    training_script(producers.SummaryWriter, tmp_path / "ours")
    theirs, ours = runs(tmp_path / "tbx"), runs(tmp_path / "ours")
    assert sorted(ours) == sorted(theirs) == [".", "accuracy/train", "accuracy/val"]
    for run, acc in theirs.items():
        mine = ours[run]
        assert sorted(mine.Tags()["scalars"]) == sorted(acc.Tags()["scalars"])
        for tag in acc.Tags()["scalars"]:
            assert [(e.step, e.value) for e in mine.Scalars(tag)] == [(e.step, e.value) for e in acc.Scalars(tag)]
        for tag in acc.Tags()["histograms"]:  # bucket edges differ by design; the data they summarise must not
            for a, b in zip(mine.Histograms(tag), acc.Histograms(tag), strict=True):
                h, g = a.histogram_value, b.histogram_value
                assert a.step == b.step and (h.num, h.min, h.max) == (g.num, g.min, g.max)
                assert math.isclose(h.sum, g.sum) and math.isclose(h.sum_squares, g.sum_squares)
        for tag in acc.Tags()["tensors"]:
            assert [(e.step, e.tensor_proto.string_val) for e in mine.Tensors(tag)] == [
                (e.step, e.tensor_proto.string_val) for e in acc.Tensors(tag)
            ]


def test_a_writer_on_an_existing_logger_reaches_its_sinks_and_leaves_it_open() -> None:
    sink = MemorySink()
    with MetricLogger(sinks=[sink]) as log:
        writer = SummaryWriter(logger=log)
        writer.add_scalar("loss", 0.5, 1)
        writer.add_hparams({"lr": 0.1, "bs": 32}, {"hparam/acc": 0.9})
        writer.close()  # flushes; the logger is the caller's to close
        assert sink.values("loss") == [(1, 0.5)]
        log.scalar("still_open", 1.0, step=0)
    assert [type(e).__name__ for e in sink.events] == ["Scalar", "Hparams", "Scalar"]


@pytest.mark.parametrize("method", ["add_image", "add_images", "add_figure", "add_video", "add_audio",
                                    "add_graph", "add_embedding", "add_pr_curve", "add_mesh"])  # fmt: skip
def test_unsupported_methods_fail_loudly_and_name_an_alternative(method: str) -> None:
    with MetricLogger() as log:
        writer = SummaryWriter(logger=log)
        with pytest.raises(NotImplementedError, match=rf"SummaryWriter\.{method} is not supported.*;"):
            getattr(writer, method)("tag", None)
