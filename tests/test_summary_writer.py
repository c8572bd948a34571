"""SummaryWriter: a tensorboardX script with only its import changed reads back the same."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorboardX
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

import producers
from bus import Hparams, Origin, Scalar
from producers import MetricLogger, SummaryWriter
from sinks import MemorySink

EVERYTHING = {"scalars": 0, "histograms": 0, "tensors": 0}


def training_script(writer_class: Any, logdir: Path) -> None:
    """What a tensorboardX user writes; only the SummaryWriter class changes."""
    rng = np.random.default_rng(0)
    with writer_class(logdir) as writer:
        writer.add_hparams({"lr": 0.1, "bs": 32, "opt": "adam"}, {"hparam/acc": 0.9}, name="hp", global_step=29)
        for step in range(30):
            writer.add_scalar("train/loss", 1.0 / (step + 1), step)
            writer.add_scalar("train/lr", np.float32(0.1 * 0.9**step), global_step=step)
            writer.add_scalars("accuracy", {"train": step / 30, "val": step / 40}, step)
            if step % 10 == 0:
                writer.add_histogram("weights", rng.normal(size=500), step)
                writer.add_text("notes", f"checkpoint at step {step}", step)
        writer.add_histogram_raw("raw", -1.0, 3.0, 6, 5.0, 11.0, [0.0, 1.0, 2.0, 3.0], [1, 2, 0, 3], 30)
        writer.add_scalar("no_step", 3.0)
        writer.add_scalar("given_walltime", 2.0, 5, walltime=1_700_000_000.5)


def runs(logdir: Path) -> dict[str, EventAccumulator]:
    out = {}
    for events in sorted(logdir.rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events.parent), size_guidance=EVERYTHING)
        acc.Reload()
        out[str(events.parent.relative_to(logdir))] = acc
    return out


def hparams_of(acc: EventAccumulator) -> dict[str, str]:
    """The HPARAMS tab's view of a run: experiment, session start and end, as text."""
    try:
        contents = acc.PluginTagToContent("hparams")
    except KeyError:  # no hparams in this run
        return {}
    return {tag: str(plugin_data_pb2.HParamsPluginData.FromString(c)) for tag, c in contents.items()}


def test_same_script_same_tensorboard_data_as_tensorboardx(tmp_path: Path) -> None:
    training_script(tensorboardX.SummaryWriter, tmp_path / "tbx")
    training_script(producers.SummaryWriter, tmp_path / "ours")
    theirs, ours = runs(tmp_path / "tbx"), runs(tmp_path / "ours")
    assert sorted(ours) == sorted(theirs) == [".", "accuracy/train", "accuracy/val", "hp"]
    for run, acc in theirs.items():
        mine = ours[run]
        assert sorted(mine.Tags()["scalars"]) == sorted(acc.Tags()["scalars"])
        for tag in acc.Tags()["scalars"]:
            assert [(e.step, e.value) for e in mine.Scalars(tag)] == [(e.step, e.value) for e in acc.Scalars(tag)]
        assert sorted(mine.Tags()["histograms"]) == sorted(acc.Tags()["histograms"])
        for tag in acc.Tags()["histograms"]:
            for a, b in zip(mine.Histograms(tag), acc.Histograms(tag), strict=True):
                h, g = a.histogram_value, b.histogram_value
                assert a.step == b.step and h.num == g.num
                if tag == "raw":  # precomputed buckets pass through unchanged
                    assert (list(h.bucket_limit), list(h.bucket)) == (list(g.bucket_limit), list(g.bucket))
                else:  # bucket edges differ by design; the data they summarise must not
                    assert (h.min, h.max) == (g.min, g.max)
                    assert math.isclose(h.sum, g.sum) and math.isclose(h.sum_squares, g.sum_squares)
        assert sorted(mine.Tags()["tensors"]) == sorted(acc.Tags()["tensors"])
        for tag in acc.Tags()["tensors"]:
            assert [(e.step, e.tensor_proto.string_val) for e in mine.Tensors(tag)] == [
                (e.step, e.tensor_proto.string_val) for e in acc.Tensors(tag)
            ]
        assert hparams_of(mine) == hparams_of(acc)
    assert hparams_of(ours["hp"])  # the comparison above compared something
    assert [e.wall_time for e in ours["."].Scalars("given_walltime")] == [1_700_000_000.5]


def test_a_writer_on_an_existing_logger_reaches_its_sinks_and_leaves_it_open() -> None:
    sink = MemorySink()
    with MetricLogger(sinks=[sink]) as log:
        writer = SummaryWriter(logger=log)
        writer.add_scalar("loss", 0.5, 1)
        writer.add_hparams({"lr": 0.1, "bs": 32}, {"hparam/acc": 0.9}, run_name="sweep-1")
        writer.close()  # flushes; the logger is the caller's to close
        writer.close()  # a second close is harmless, as in tensorboardX
        assert sink.values("loss") == [(1, 0.5)]
        log.scalar("still_open", 1.0, step=0)
    assert [type(e).__name__ for e in sink.events] == ["Scalar", "Hparams", "Scalar"]
    hparams = sink.events[1]
    assert isinstance(hparams, Hparams) and hparams.origin.label == "sweep-1"


def test_both_positional_orders_of_add_hparams() -> None:
    sink = MemorySink()
    with MetricLogger(sinks=[sink]) as log, SummaryWriter(logger=log) as writer:
        writer.add_hparams({"lr": 0.1}, {"m": 1.0}, "tbx-run", 7)  # tensorboardX: name, global_step
        writer.add_hparams({"lr": 0.2}, {"m": 2.0}, None, "torch-run", 8)  # torch: domain, run_name, step
    placed = [(e.origin.label, e.step, e.params["lr"]) for e in sink.events if isinstance(e, Hparams)]
    assert placed == [("tbx-run", 7, 0.1), ("torch-run", 8, 0.2)]


def test_add_scalars_keeps_the_loggers_rank_and_one_origin_per_series() -> None:
    sink = MemorySink()
    with MetricLogger(sinks=[sink], origin=Origin(rank=3)) as log:
        writer = SummaryWriter(logger=log)
        for step in range(3):
            writer.add_scalars("loss/all", {"train set": 1.0, "val": 2.0}, step)
        writer.flush()
    labels = [e.origin.label for e in sink.events if isinstance(e, Scalar)]
    assert labels == ["loss_all/train_set/rank3", "loss_all/val/rank3"] * 3
    assert len(writer._series) == 2  # one entry per series, none per value


def test_log_freq_skips_calls_before_anything_is_built() -> None:
    sink = MemorySink()
    with MetricLogger(sinks=[sink]) as log:
        writer = SummaryWriter(logger=log, log_freq=10)
        for step in range(25):
            writer.add_scalar("loss", float(step), step)
            writer.add_scalars("acc", {"train": 0.5}, step)
            writer.add_text("note", "x", step)
        writer.add_scalar("final", 1.0)  # global_step=None is step 0: logged under every=N
        published = log.stats()["memory"].published
    assert [s for s, _ in sink.values("loss")] == [0, 10, 20]
    assert sink.values("final") == [(0, 1.0)]
    assert published == 3 * 3 + 1


def test_default_logdir_is_tensorboardxs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with SummaryWriter(comment="_lr0.1") as w:
        w.add_scalar("loss", 1.0, 0)
    assert Path(w.get_logdir()).parent == Path("runs") and w.get_logdir().endswith("_lr0.1")
    assert list(Path(w.get_logdir()).glob("events.out.tfevents.*"))


def test_every_public_method_of_tensorboardx_and_torch_is_there_and_none_is_refused() -> None:
    from torch.utils.tensorboard import SummaryWriter as TorchWriter

    ours = {m for m in dir(SummaryWriter) if not m.startswith("_")}
    for peer in (tensorboardX.SummaryWriter, TorchWriter):
        theirs = {m for m in dir(peer) if not m.startswith("_")}
        assert theirs <= ours, peer
    refused = {m for m in ours if "NotImplementedError" in (getattr(SummaryWriter, m).__doc__ or "")}
    assert refused == set()


def test_use_metadata_sets_the_step_and_walltime_of_calls_without_them() -> None:
    sink = MemorySink()
    with MetricLogger(sinks=[sink]) as log, SummaryWriter(logger=log) as writer:
        with writer.use_metadata(global_step=10, walltime=1_700_000_000.0):
            writer.add_scalar("a", 1.0)
            writer.add_scalar("b", 2.0, 3, walltime=1_800_000_000.0)  # explicit values win
        writer.add_scalar("c", 3.0)
    placed = [(e.name, e.step, e.wall_time) for e in sink.events if isinstance(e, Scalar)]
    assert placed[:2] == [("a", 10, 1_700_000_000.0), ("b", 3, 1_800_000_000.0)]
    assert placed[2][:2] == ("c", 0) and placed[2][2] != 1_700_000_000.0


# ---- writer.file_writer, flush and close, as tensorboardX's own tests use them ----


def event_records(logdir: Path) -> int:
    """Records in a run's event files, read with TensorBoard's record reader."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    return sum(sum(1 for _ in EventFileLoader(str(path)).Load()) for path in logdir.glob("events.out.tfevents.*"))


@pytest.mark.parametrize("writer_class", [tensorboardX.SummaryWriter, producers.SummaryWriter])
def test_file_writer_is_none_once_a_with_block_closes_the_writer(writer_class: Any, tmp_path: Path) -> None:
    with writer_class(tmp_path, filename_suffix=".test") as writer:
        assert writer.file_writer is not None
        assert writer.file_writer.get_logdir() == str(tmp_path)
        writer.add_scalar("test", 1)
    assert writer.file_writer is None
    writer.add_text("reuse", "a call after close reopens the writer", 0)
    assert writer.file_writer is not None
    writer.close()
    files = list(tmp_path.glob("events.out.tfevents.*"))
    assert files and all(p.name.endswith(".test") for p in files)
    assert [t.step for t in runs(tmp_path)["."].Tensors("reuse/text_summary")] == [0]


def test_flush_puts_every_call_so_far_in_the_file_and_flush_after_close_is_harmless(tmp_path: Path) -> None:
    """tensorboardX's flush does not wait for its queue (its own test sleeps past flush_secs);
    ours returns once the sink has written every call made before it."""
    writer = producers.SummaryWriter(tmp_path / "ours", flush_secs=120)
    for i in range(5):
        writer.add_scalar("a", i, i)
    writer.flush()
    assert event_records(tmp_path / "ours") == 1 + 5  # the file's version record, then every scalar
    writer.add_scalar("a", 5, 5)
    assert writer.file_writer is not None
    writer.file_writer.flush()
    assert event_records(tmp_path / "ours") == 1 + 6
    writer.close()
    writer.flush()  # after close: nothing to do, no error, as in tensorboardX
    with tensorboardX.SummaryWriter(tmp_path / "tbx", flush_secs=120) as theirs:
        for i in range(6):
            theirs.add_scalar("a", i, i)
    theirs.flush()
    assert event_records(tmp_path / "ours") == event_records(tmp_path / "tbx") == 1 + 6
