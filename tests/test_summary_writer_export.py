"""SummaryWriter.export_scalars_to_json next to tensorboardX's: the same calls give the same JSON
text (keys, order, timestamps, null steps, NaN/Infinity, escaping), export empties the record as
there, and add_scalars with use_metadata writes what tensorboardX writes. The values wait on disk:
a long run's record does not grow the training process's memory, as tensorboardX's dict does."""

from __future__ import annotations

import json
import math
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorboardX
import torch

import producers
from tests.test_summary_writer_compat import scalars

Writer = Callable[..., Any]


def log_awkward_values(writer: Any) -> None:
    """add_scalars as scripts call it: walltimes given (float and int) so that both writers
    record the same times; numpy, tensor and bool values; NaN and ±inf; odd tags."""
    for step in range(3):
        writer.add_scalars("loss", {"train": 1.0 / (step + 1), "val": np.float32(0.5) * step}, step, 1000.5 + step)
    writer.add_scalars("loss", {"test": torch.tensor(0.25)}, 7, 2000)  # an int walltime stays an int
    writer.add_scalars("odd tags/ü", {"a b": math.nan, "c/d": math.inf, '"q"': -math.inf}, 3, 3000.25)
    writer.add_scalars("flags", {"on": True, "one": np.array([[2.0]])}, walltime=4000.0)  # no step: null
    writer.add_scalar("single", 1.0, 0, 5000.0)  # add_scalar values are not exported


def export(make: Writer, logdir: Path, path: Path, calls: Callable[[Any], None]) -> str:
    writer = make(str(logdir))
    calls(writer)
    writer.export_scalars_to_json(str(path))
    writer.close()
    return path.read_text()


def test_the_same_calls_export_the_same_json_text(tmp_path: Path) -> None:
    theirs = export(tensorboardX.SummaryWriter, tmp_path / "A", tmp_path / "a.json", log_awkward_values)
    ours = export(producers.SummaryWriter, tmp_path / "B", tmp_path / "b.json", log_awkward_values)
    assert ours == theirs.replace(str(tmp_path / "A"), str(tmp_path / "B"))  # the keys hold each logdir
    exported = json.loads(ours)
    assert list(exported)[:3] == [str(tmp_path / "B" / "loss" / tag) for tag in ("train", "val", "test")]
    assert exported[str(tmp_path / "B" / "flags" / "on")] == [[4000.0, None, 1.0]]


def test_export_empties_the_record_and_works_after_close(tmp_path: Path) -> None:
    def twice(make: Writer, logdir: Path) -> list[str]:
        writer = make(str(logdir))
        texts = []
        writer.add_scalars("m", {"x": 1.0}, 0, 10.0)
        writer.export_scalars_to_json(str(tmp_path / "first.json"))
        writer.add_scalars("m", {"y": 2.0}, 1, 11.0)
        writer.close()  # tensorboardX keeps the record after close
        writer.export_scalars_to_json(str(tmp_path / "second.json"))
        writer.export_scalars_to_json(str(tmp_path / "third.json"))
        for name in ("first", "second", "third"):
            texts.append((tmp_path / f"{name}.json").read_text().replace(str(logdir), "<logdir>"))
        writer.close()
        return texts

    ours = twice(producers.SummaryWriter, tmp_path / "ours")
    assert ours == twice(tensorboardX.SummaryWriter, tmp_path / "theirs")
    assert ours == ['{"<logdir>/m/x": [[10.0, 0, 1.0]]}', '{"<logdir>/m/y": [[11.0, 1, 2.0]]}', "{}"]


@pytest.mark.parametrize("write_to_disk", [True, False])
def test_calls_without_walltime_record_the_time_of_the_call(tmp_path: Path, write_to_disk: bool) -> None:
    writer = producers.SummaryWriter(str(tmp_path / "run"), write_to_disk=write_to_disk)
    writer.add_scalars("m", {"x": 1.0, "y": 2.0}, 4)
    writer.export_scalars_to_json(str(tmp_path / "out.json"))
    writer.close()
    (x,), (y,) = json.loads((tmp_path / "out.json").read_text()).values()
    assert x[1:] == [4, 1.0] and y[1:] == [4, 2.0]
    assert x[0] == y[0] and abs(x[0] - __import__("time").time()) < 600  # one time for the call, as there


def test_add_scalars_ignores_use_metadata_as_tensorboardx_does(tmp_path: Path) -> None:
    """tensorboardX's add_scalars writes each series with a writer of its own, which use_metadata
    does not reach: no global_step is step 0 in TensorBoard (and null in the export)."""
    for name, make in (("theirs", tensorboardX.SummaryWriter), ("ours", producers.SummaryWriter)):
        writer = make(str(tmp_path / name))
        with writer.use_metadata(global_step=5):
            writer.add_scalars("m", {"x": 1.0}, walltime=50.0)
            writer.add_scalar("plain", 2.0)
        writer.export_scalars_to_json(str(tmp_path / f"{name}.json"))
        writer.close()
    assert (
        scalars(tmp_path / "ours")
        == scalars(tmp_path / "theirs")
        == {
            (".", "plain"): [(5, 2.0)],
            ("m/x", "m"): [(0, 1.0)],
        }
    )
    assert json.loads((tmp_path / "ours.json").read_text()) == {str(tmp_path / "ours" / "m" / "x"): [[50.0, None, 1.0]]}


def grown_bytes(make: Writer, logdir: Path, values: int) -> int:
    """How much memory the writer holds after `values` add_scalars values (nothing written to disk)."""
    writer = make(str(logdir), write_to_disk=False)
    writer.add_scalars("warm", {"up": 0.0}, 0)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for step in range(values // 2):
            writer.add_scalars("loss", {"train": step * 0.5, "val": step * 0.25}, step)
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
        writer.close()


def test_a_long_run_keeps_its_record_on_disk_not_in_memory(tmp_path: Path) -> None:
    values = 40_000
    theirs = grown_bytes(tensorboardX.SummaryWriter, tmp_path / "theirs", values)
    ours = grown_bytes(producers.SummaryWriter, tmp_path / "ours", values)
    assert theirs > 100 * values  # tensorboardX: a list of three numbers per value, kept for ever
    assert ours < 200_000  # a buffer and the series' keys, whatever the number of values
