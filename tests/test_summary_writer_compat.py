"""SummaryWriter next to tensorboardX: one-element tensors, use after close, write_to_disk=False,
one HPARAMS row per add_hparams call, purge_step, and arguments that are refused or reported."""

from __future__ import annotations

import logging
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorboardX
import torch
from tensorboard import context as tb_context
from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
from tensorboard.plugins import base_plugin
from tensorboard.plugins.hparams import api_pb2, backend_context, list_session_groups

import producers
from bus import Hparams, InvalidConfig, InvalidEvent, Scalar
from producers import MetricLogger, SummaryWriter
from sinks import MemorySink
from tests.test_summary_writer import runs

WRITERS = [tensorboardX.SummaryWriter, producers.SummaryWriter]


def scalars(logdir: Path) -> dict[tuple[str, str], list[tuple[int, float]]]:
    """Every scalar series under `logdir` as TensorBoard reads it: (run, tag) -> [(step, value)]."""
    return {
        (run, tag): [(e.step, e.value) for e in acc.Scalars(tag)]
        for run, acc in runs(logdir).items()
        for tag in acc.Tags()["scalars"]
    }


def session_groups(logdir: Path) -> list[Any]:
    """The rows of TensorBoard's HPARAMS tab, from the hparams plugin's own session-group query."""
    multiplexer = plugin_event_multiplexer.EventMultiplexer().AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    provider = data_provider.MultiplexerDataProvider(multiplexer, str(logdir))
    context = backend_context.Context(base_plugin.TBContext(logdir=str(logdir), data_provider=provider))
    request = api_pb2.ListSessionGroupsRequest(
        start_index=0, slice_size=1_000, allowed_statuses=[api_pb2.STATUS_UNKNOWN, api_pb2.STATUS_SUCCESS]
    )
    response = list_session_groups.Handler(tb_context.RequestContext(), context, "", request).run()
    return list(response.session_groups)


def age(logdir: Path, seconds: int) -> None:
    """Make a run's event files `seconds` older by name, as a restart a minute later finds them
    (TensorBoard orders a run's files by name, which starts with the file's creation second)."""
    for path in logdir.glob("events.out.tfevents.*"):
        parts = path.name.split(".")
        parts[3] = str(int(parts[3]) - seconds)
        path.rename(path.with_name(".".join(parts)))


# ---- one-element arrays and tensors are scalars ----


def one_element_script(writer_class: Any, logdir: Path) -> None:
    """A loss of shape [1], numpy one-element arrays, and tensor steps, as training code has them."""
    with writer_class(logdir) as writer:
        for step in range(5):
            loss = torch.tensor([1.0 / (step + 1)])
            writer.add_scalar("loss", loss, step)
            writer.add_scalar("lr", np.array([0.5**step], dtype=np.float32), torch.tensor(step))
            writer.add_scalar("acc", torch.tensor(step / 10), np.int64(step), walltime=np.float64(1.7e9 + step))
            writer.add_scalars("split", {"train": loss * 2, "val": np.array([[0.25]])}, step)
        writer.add_hparams({"lr": 0.1}, {"hparam/loss": torch.tensor([0.2]), "hparam/acc": np.array([0.9])}, "hp")
        writer.add_hparams({"lr": torch.tensor([0.5]), "bs": np.array([32])}, {"hparam/acc": 0.8}, "hp_tensors")


def test_one_element_tensors_and_arrays_are_scalars_as_in_tensorboardx(tmp_path: Path) -> None:
    one_element_script(tensorboardX.SummaryWriter, tmp_path / "tbx")
    one_element_script(producers.SummaryWriter, tmp_path / "ours")
    theirs, ours = scalars(tmp_path / "tbx"), scalars(tmp_path / "ours")
    assert ours == theirs
    assert ours[("hp", "hparam/loss")] == [(0, pytest.approx(0.2))]
    assert [e.wall_time for e in runs(tmp_path / "ours")["."].Scalars("acc")] == [1.7e9 + s for s in range(5)]
    # one-element hyperparameters are numbers in the HPARAMS tab (tensorboardX leaves them empty)
    tab = {dict(g.hparams)["lr"].number_value: dict(g.hparams) for g in session_groups(tmp_path / "ours")}
    assert sorted(tab) == [0.1, 0.5] and tab[0.5]["bs"].number_value == 32


@pytest.mark.parametrize("array", [torch.tensor([0.5, 0.25]), np.array([0.5, 0.25]), np.zeros((2, 1))])
def test_real_arrays_are_still_refused_everywhere_a_scalar_is_taken(array: Any) -> None:
    with MetricLogger() as log, SummaryWriter(logger=log) as writer:
        with pytest.raises(InvalidEvent, match="must be a single number"):
            writer.add_scalar("loss", array, 0)
        with pytest.raises(InvalidEvent, match="must be a single number"):
            writer.add_scalars("split", {"train": array}, 0)
        with pytest.raises(InvalidEvent, match="must be a single number"):
            writer.add_hparams({"lr": 0.1}, {"hparam/acc": array})


# ---- a writer used after close() goes on ----


def used_after_close(writer_class: Any, logdir: Path) -> None:
    writer = writer_class(logdir)
    for step in range(5):
        writer.add_scalar("loss", float(step), step)
    writer.close()
    for step in range(5, 10):
        writer.add_scalar("loss", float(step), step)
        writer.add_scalars("split", {"train": float(step)}, step)
    writer.flush()
    writer.close()
    writer.close()


def test_a_writer_used_after_close_goes_on_in_a_new_event_file_as_tensorboardx(tmp_path: Path) -> None:
    used_after_close(tensorboardX.SummaryWriter, tmp_path / "tbx")
    used_after_close(producers.SummaryWriter, tmp_path / "ours")
    theirs, ours = scalars(tmp_path / "tbx"), scalars(tmp_path / "ours")
    assert sorted(ours[(".", "loss")]) == [(s, float(s)) for s in range(10)]  # two files, one second: any order
    # tensorboardX reopens a file named by the second: within the same second it replaces the first
    assert set(theirs[(".", "loss")]) >= {(s, float(s)) for s in range(5, 10)}
    assert ours[("split/train", "split")] == theirs[("split/train", "split")] == [(s, float(s)) for s in range(5, 10)]
    assert len(list((tmp_path / "ours").glob("events.out.tfevents.*"))) == 2


def test_a_writer_on_a_callers_logger_goes_on_after_close() -> None:
    sink = MemorySink()
    with MetricLogger(sinks=[sink]) as log:
        writer = SummaryWriter(logger=log)
        writer.add_scalar("loss", 1.0, 0)
        writer.close()
        writer.add_scalar("loss", 2.0, 1)
        writer.close()
        assert sink.values("loss") == [(0, 1.0), (1, 2.0)]


# ---- write_to_disk=False writes nothing ----


def silent_script(writer_class: Any, logdir: Path) -> None:
    """Everything a non-zero DDP rank calls, with write_to_disk=False."""
    writer = writer_class(logdir, purge_step=3, write_to_disk=False)
    writer.add_scalar("loss", 0.5, 0)
    writer.add_scalars("split", {"train": 0.5, "val": 0.4}, 0)
    writer.add_histogram("weights", np.arange(10.0), 0)
    writer.add_text("notes", "rank 1", 0)
    writer.add_image("sample", np.zeros((3, 4, 4)), 0)
    writer.add_images("batch", np.zeros((2, 3, 4, 4)), 0)
    writer.add_custom_scalars({"losses": {"loss": ["Multiline", ["loss"]]}})
    writer.flush()
    writer.close()
    writer.add_scalar("loss", 0.4, 1)  # after close: tensorboardX's dummy writer still writes nothing
    writer.close()


@pytest.mark.parametrize("writer_class", WRITERS)
def test_write_to_disk_false_writes_nothing_and_creates_no_directory(tmp_path: Path, writer_class: Any) -> None:
    silent_script(writer_class, tmp_path / "runs" / "rank1")
    assert list(tmp_path.iterdir()) == []
    root_files = set(Path("/").glob("events.out.tfevents.*"))
    with writer_class("/", write_to_disk=False) as writer:  # the case
        writer.add_scalar("loss", 0.5, 0)
    assert set(Path("/").glob("events.out.tfevents.*")) == root_files


def test_write_to_disk_false_on_a_callers_logger_publishes_nothing_but_still_checks() -> None:
    sink = MemorySink()
    with MetricLogger(sinks=[sink]) as log:
        writer = SummaryWriter(logger=log, write_to_disk=False)  # a DDP rank other than 0
        writer.add_scalar("loss", torch.tensor([0.5]), 0)
        writer.add_scalars("split", {"train": 0.5}, 0)
        writer.add_hparams({"lr": 0.1}, {"hparam/acc": 0.9})
        writer.add_image("sample", torch.zeros(3, 4, 4), 0)
        with pytest.raises(InvalidEvent):
            writer.add_scalar("loss", np.array([1.0, 2.0]), 1)
        with pytest.raises(InvalidEvent, match="channels"):
            writer.add_image("sample", torch.zeros(2, 4, 4), 1)
        writer.close()
        log.scalar("rank0_only", 1.0, 0)
    assert [type(e).__name__ for e in sink.events] == ["Scalar"] and sink.values("rank0_only") == [(0, 1.0)]


# ---- add_hparams: one session per call, in its own sub-run ----


def sweep(writer_class: Any, logdir: Path, named: bool) -> None:
    with writer_class(logdir) as writer:
        for trial in range(24):
            name = f"trial{trial:02d}" if named else None
            writer.add_hparams({"lr": 0.001 * (trial + 1), "opt": "adam"}, {"hparam/acc": trial / 24}, name=name)


def hparams_rows(logdir: Path) -> list[tuple[float, str, float]]:
    """(lr, opt, acc) of every row of the HPARAMS tab, sorted."""
    rows = []
    for group in session_groups(logdir):
        (session,) = group.sessions
        (metric,) = session.metric_values
        rows.append((group.hparams["lr"].number_value, group.hparams["opt"].string_value, metric.value))
    return sorted(rows)


@pytest.mark.parametrize("named", [False, True])
def test_each_add_hparams_call_is_a_row_of_the_hparams_tab_as_in_tensorboardx(tmp_path: Path, named: bool) -> None:
    sweep(tensorboardX.SummaryWriter, tmp_path / "tbx", named)
    sweep(producers.SummaryWriter, tmp_path / "ours", named)
    theirs, ours = hparams_rows(tmp_path / "tbx"), hparams_rows(tmp_path / "ours")
    assert len(ours) == 24
    assert ours == theirs
    sub_runs = sorted(p.name for p in (tmp_path / "ours").iterdir() if p.is_dir())
    assert len(sub_runs) == 24
    if named:
        assert sub_runs == sorted(p.name for p in (tmp_path / "tbx").iterdir() if p.is_dir())


def test_unnamed_sessions_stay_apart_on_a_coarse_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    import producers._summary_writer as module

    monkeypatch.setattr(module, "time", types.SimpleNamespace(time=lambda: 1_700_000_000.0))  # one tick for all
    sink = MemorySink()
    with MetricLogger(sinks=[sink]) as log, SummaryWriter(logger=log) as writer:
        for trial in range(24):
            writer.add_hparams({"lr": 0.001 * trial}, {"hparam/acc": trial / 24})
    labels = [e.origin.label for e in sink.events if isinstance(e, Hparams)]
    assert len(set(labels)) == 24 and labels[0] == "1700000000.0"


# ---- purge_step ----


def crash_then_resume(writer_class: Any, logdir: Path, resumed: range) -> None:
    """A run that crashed after step 157, resumed from its step-100 checkpoint a minute later."""
    crashed = writer_class(logdir)
    for step in range(158):
        crashed.add_scalar("loss", 1.0, step)
    crashed.close()
    age(logdir, 60)
    with writer_class(logdir, purge_step=100) as writer:
        for step in resumed:
            writer.add_scalar("loss", 2.0, step)


@pytest.mark.parametrize("resumed", [range(0), range(100, 120)], ids=["nothing logged yet", "steps 100-119"])
def test_purge_step_hides_the_crashed_points_from_that_step_as_in_tensorboardx(tmp_path: Path, resumed: range) -> None:
    crash_then_resume(tensorboardX.SummaryWriter, tmp_path / "tbx", resumed)
    crash_then_resume(producers.SummaryWriter, tmp_path / "ours", resumed)
    theirs, ours = scalars(tmp_path / "tbx"), scalars(tmp_path / "ours")
    assert ours[(".", "loss")] == [(s, 1.0) for s in range(100)] + [(s, 2.0) for s in resumed]
    assert ours == theirs


def test_purge_step_is_written_once_even_when_a_closed_writer_goes_on(tmp_path: Path) -> None:
    with SummaryWriter(tmp_path, purge_step=0) as writer:
        writer.add_scalar("loss", 1.0, 5)
    writer.add_scalar("loss", 2.0, 6)  # reopens: the step-5 point must not be purged again
    writer.close()
    assert sorted(scalars(tmp_path)[(".", "loss")]) == [(5, 1.0), (6, 2.0)]  # two files, one second: any order


def test_purge_step_and_filename_suffix_are_refused_with_a_callers_logger() -> None:
    with MetricLogger() as log:
        with pytest.raises(InvalidConfig, match="purge_step and filename_suffix"):
            SummaryWriter(logger=log, purge_step=10)
        with pytest.raises(InvalidConfig, match="purge_step and filename_suffix"):
            SummaryWriter(logger=log, filename_suffix=".rank1")


# ---- arguments: honoured, accepted for tensorboardX's buffering, or refused ----


@pytest.mark.parametrize("writer_class", WRITERS)
def test_an_unknown_keyword_is_a_type_error_naming_it_as_in_tensorboardx(tmp_path: Path, writer_class: Any) -> None:
    with pytest.raises(TypeError, match="flush_every"):
        writer_class(tmp_path / "a", flush_every=5)
    with writer_class(tmp_path / "b") as writer, pytest.raises(TypeError, match="step"):
        writer.add_scalar("loss", 0.5, step=3)


def named_options_script(writer_class: Any, logdir: Path) -> None:
    """tensorboardX's named parameters as scripts pass them, positionally and by name."""
    options = {"max_queue": 1, "flush_secs": 1, "filename_suffix": ".rank0", "comet_config": {"disabled": True}}
    with writer_class(logdir, "_comment", None, **options) as writer:
        for step in range(3):
            writer.add_scalar("loss", 0.5 * step, step, 1.7e9 + step, display_name="Loss", summary_description="mean")
        writer.add_histogram("weights", np.arange(100.0), 2, bins="auto", walltime=1.7e9 + 2)


def test_tensorboardx_named_options_keep_working_and_walltime_is_honoured(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    named_options_script(tensorboardX.SummaryWriter, tmp_path / "tbx")
    with caplog.at_level(logging.WARNING, logger="metricbus"):
        named_options_script(producers.SummaryWriter, tmp_path / "ours")
    theirs, ours = runs(tmp_path / "tbx")["."], runs(tmp_path / "ours")["."]
    loss = [(e.step, e.value, e.wall_time) for e in ours.Scalars("loss")]
    assert loss == [(e.step, e.value, e.wall_time) for e in theirs.Scalars("loss")]
    assert [e.wall_time for e in ours.Histograms("weights")] == [1.7e9 + 2]
    assert all(p.name.endswith(".rank0") for p in (tmp_path / "ours").glob("events.out.tfevents.*"))
    reported = [r.getMessage() for r in caplog.records]
    assert sum("display_name=, summary_description=" in m for m in reported) == 1  # once, not per call
    assert sum("bins=, max_bins=" in m for m in reported) == 1


def test_torch_scalar_options_keep_working_in_either_positional_order(caplog: pytest.LogCaptureFixture) -> None:
    sink = MemorySink()
    with caplog.at_level(logging.WARNING, logger="metricbus"), MetricLogger(sinks=[sink]) as log:
        writer = SummaryWriter(logger=log)
        writer.add_scalar("a", 0.5, 0, None, True)  # torch: new_style, positionally
        writer.add_scalar("b", 0.5, 0, new_style=True)
        writer.add_scalar("c", 0.5, 0, None, True, True)  # torch: new_style, double_precision
        writer.flush()
    assert [(e.name, e.value) for e in sink.events if isinstance(e, Scalar)] == [("a", 0.5), ("b", 0.5), ("c", 0.5)]
    assert [r.getMessage() for r in caplog.records] == [
        "SummaryWriter: add_scalar(double_precision=True) has no effect here: "
        "the TensorBoard sink stores scalars as float32"
    ]


def test_an_enabled_comet_config_is_refused() -> None:
    with pytest.raises(NotImplementedError, match="comet_config"):
        SummaryWriter(write_to_disk=False, comet_config={"disabled": False, "project_name": "x"})
