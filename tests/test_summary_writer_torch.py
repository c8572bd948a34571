"""producers.SummaryWriter against torch.utils.tensorboard.SummaryWriter, side by side in the same
test, both read back with TensorBoard's own reader: every dtype torch's writer takes, and a
logdir deleted while a writer is still open (a test's tearDown).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.util import tensor_util
from torch.utils.tensorboard import SummaryWriter as TorchWriter

from producers import SummaryWriter

ROOT = Path(__file__).resolve().parents[1]
#: Every real dtype torch's writer takes (complex is not one: it drops the imaginary part).
DTYPES = [
    torch.float16,
    torch.bfloat16,
    torch.float32,
    torch.float64,
    torch.bool,
    torch.int8,
    torch.int16,
    torch.int32,
    torch.int64,
    torch.uint8,
    torch.uint16,
    torch.uint32,
    torch.uint64,
]


def _as(dtype: torch.dtype, values: torch.Tensor) -> torch.Tensor:
    """`values` (in [0, 1]) in `dtype`: a mask for bool, 0/1 for integers, as a script would pass."""
    return values > 0.5 if dtype == torch.bool else values.to(dtype)


def _calls(dtype: torch.dtype) -> dict[str, Callable[[Any], None]]:
    """The writer methods that take tensors, each called with tensors of `dtype`."""
    gen = torch.Generator().manual_seed(0)
    image = _as(dtype, torch.rand(3, 6, 5, generator=gen))
    images = _as(dtype, torch.rand(2, 3, 6, 5, generator=gen))
    values = (torch.arange(40) % 7).to(dtype) if dtype != torch.bool else torch.arange(40) % 3 == 0
    scalar = torch.tensor(3).to(dtype)
    labels = torch.rand(30, generator=gen) > 0.5
    predictions = _as(dtype, torch.rand(30, generator=gen))
    vertices = _as(dtype, torch.rand(1, 4, 3, generator=gen))
    return {
        "add_scalar": lambda w: w.add_scalar("scalar", scalar, 1),
        "add_scalars": lambda w: w.add_scalars("many", {"a": scalar}, 1),
        "add_histogram": lambda w: w.add_histogram("histogram", values, 1),
        "add_image": lambda w: w.add_image("image", image, 1),
        "add_images": lambda w: w.add_images("images", images, 1),
        "add_pr_curve": lambda w: w.add_pr_curve("pr", labels, predictions, 1),
        "add_mesh": lambda w: w.add_mesh("mesh", vertices=vertices, global_step=1),
        "add_embedding": lambda w: w.add_embedding(_as(dtype, torch.rand(5, 4, generator=gen)), global_step=1),
        "add_image_with_boxes": lambda w: w.add_image_with_boxes("boxes", image, torch.tensor([[1.0, 1, 4, 4]]), 1),
    }


def _accepted(writer: Any, dtype: torch.dtype) -> dict[str, str]:
    """Each method's outcome with `dtype`: "ok" or the kind of exception it raised."""
    out = {}
    for name, call in _calls(dtype).items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                call(writer)
            out[name] = "ok"
        except Exception as exc:
            out[name] = type(exc).__name__
    return out


def _read(logdir: Path) -> EventAccumulator:
    acc = EventAccumulator(str(logdir), size_guidance={"images": 0, "histograms": 0, "tensors": 0, "scalars": 0})
    acc.Reload()
    return acc


def _pixels(encoded: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(encoded)))


@pytest.mark.parametrize("dtype", DTYPES, ids=[str(d).removeprefix("torch.") for d in DTYPES])
def test_every_dtype_torch_takes_gives_the_same_values(tmp_path: Path, dtype: torch.dtype) -> None:
    with TorchWriter(str(tmp_path / "torch")) as theirs:
        torch_outcomes = _accepted(theirs, dtype)
    with SummaryWriter(str(tmp_path / "ours")) as ours:
        our_outcomes = _accepted(ours, dtype)
    assert our_outcomes == torch_outcomes
    assert set(torch_outcomes.values()) == {"ok"}
    real, mine = _read(tmp_path / "torch"), _read(tmp_path / "ours")
    assert [(e.step, e.value) for e in mine.Scalars("scalar")] == [(e.step, e.value) for e in real.Scalars("scalar")]
    for tag in ("image", "images", "boxes"):
        (r,), (m,) = real.Images(tag), mine.Images(tag)
        ours_pixels, torch_pixels = _pixels(m.encoded_image_string).astype(int), _pixels(r.encoded_image_string)
        # float16 and float64 are scaled in their own precision, as tensorboardX does (its pixels
        # are the same byte for byte: tests/test_images.py); torch computes in float32, which
        # rounds a few pixels one level apart
        tolerance = 1 if dtype in (torch.float16, torch.bfloat16, torch.float64) else 0
        assert np.abs(ours_pixels - torch_pixels).max() <= tolerance, tag
    (r,), (m,) = real.Histograms("histogram"), mine.Histograms("histogram")
    for stat in ("min", "max", "num", "sum", "sum_squares"):
        assert getattr(m.histogram_value, stat) == pytest.approx(getattr(r.histogram_value, stat)), stat
    # the mesh's vertices: tensorboardX names the tag by the content type's number, torch by its name
    for torch_tag, tag in (("pr", "pr"), ("mesh_VERTEX", "mesh_1")):
        (r,), (m,) = real.Tensors(torch_tag), mine.Tensors(tag)
        assert np.array_equal(tensor_util.make_ndarray(m.tensor_proto), tensor_util.make_ndarray(r.tensor_proto)), tag


DELETED = """
import shutil, sys
from pathlib import Path
{import_line}

logdir = Path(sys.argv[1])
writer = SummaryWriter(str(logdir))
writer.add_scalar("loss", 1.0, 0)
writer.flush()
assert logdir.is_dir()
shutil.rmtree(logdir)  # a test's tearDown, with the writer still open
for step in range(1, 50):
    writer.add_scalar("loss", 1.0 / step, step)
    if sys.argv[2] == "more":  # torch's add_scalars opens a writer per series: it makes the folder again
        writer.add_scalars("split", {{"train": 1.0, "val": 2.0}}, step)
        writer.add_text("note", "late", step)
writer.flush()
# the script ends without close(): the exit path drains what is left
"""


def _late_writes(import_line: str, logdir: Path, calls: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", DELETED.format(import_line=import_line), str(logdir), calls],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_late_writes_to_a_deleted_logdir_do_not_make_it_again(tmp_path: Path) -> None:
    theirs = _late_writes("from torch.utils.tensorboard import SummaryWriter", tmp_path / "torch", "scalars")
    assert not (tmp_path / "torch").exists()
    assert "FileNotFoundError" in theirs.stderr  # torch's writer fails at its next flush, and at exit
    for calls in ("scalars", "more"):
        ours = _late_writes("from producers import SummaryWriter", tmp_path / calls, calls)
        assert ours.returncode == 0, ours.stderr
        assert not (tmp_path / calls).exists(), sorted(p.name for p in (tmp_path / calls).rglob("*"))


#: Every dtype torch's add_tensor is given here; it writes the first twelve and refuses the rest.
TENSOR_DTYPES = [
    *(torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.bool, torch.uint8),
    *(torch.int8, torch.int16, torch.int32, torch.int64, torch.complex64, torch.complex128),
    *(torch.complex32, torch.uint16, torch.uint32, torch.uint64, torch.float8_e4m3fn),
]
#: Values a dtype rounds, wraps or saturates differently; NaN, ±inf and -0.0 for the floats.
AWKWARD = [[-2.5, -1.0, 0.0, 1.0, 200.0, 3e4], [float("nan"), float("inf"), -float("inf"), -0.0, 1e-8, 255.0]]


def _tensor_calls(writer: Any, dtype: torch.dtype) -> str:
    """add_tensor with a 2x3 tensor, a 0-d one, an empty one and a transposed view, of `dtype`:
    "ok" or the kind of exception it raised."""
    values = torch.tensor(AWKWARD)
    if dtype.is_complex:
        values = values + 0.5j * values.flip(0)
    try:
        writer.add_tensor("t", values.to(dtype), 3)
        writer.add_tensor("zero_d", values[0, 1].to(dtype), 4, walltime=1234.5)
        writer.add_tensor("empty", values[:0].to(dtype), 5)
        writer.add_tensor("view", values.to(dtype).t(), 6)
    except Exception as exc:
        return type(exc).__name__
    return "ok"


@pytest.mark.parametrize("dtype", TENSOR_DTYPES, ids=[str(d).removeprefix("torch.") for d in TENSOR_DTYPES])
def test_add_tensor_writes_the_tensor_proto_torch_writes(tmp_path: Path, dtype: torch.dtype) -> None:
    """TensorBoard reads back the same TensorProto (dtype, shape, the values in the same field)
    for every dtype torch writes, at the same steps and wall times; a dtype torch refuses is
    refused with a ValueError, as there."""
    with TorchWriter(str(tmp_path / "torch")) as theirs:
        torch_outcome = _tensor_calls(theirs, dtype)
    with SummaryWriter(str(tmp_path / "ours")) as ours:
        our_outcome = _tensor_calls(ours, dtype)
    if torch_outcome != "ok":
        assert torch_outcome == "ValueError" and our_outcome == "InvalidEvent"  # InvalidEvent is a ValueError
        assert not _read(tmp_path / "ours").Tags()["tensors"]
        return
    assert our_outcome == "ok"
    real, mine = _read(tmp_path / "torch"), _read(tmp_path / "ours")
    assert sorted(mine.Tags()["tensors"]) == sorted(real.Tags()["tensors"]) == ["empty", "t", "view", "zero_d"]
    for tag in ("t", "zero_d", "empty", "view"):
        (r,), (m,) = real.Tensors(tag), mine.Tensors(tag)
        assert m.step == r.step
        assert m.tensor_proto == r.tensor_proto, tag  # dtype, shape and every value, NaN payloads included
        assert mine.SummaryMetadata(tag) == real.SummaryMetadata(tag)  # plugin "tensor"
    assert [e.wall_time for e in mine.Tensors("zero_d")] == [1234.5]
    if dtype not in (torch.float16, torch.bfloat16, torch.uint8):  # torch writes these as make_ndarray cannot read
        got = tensor_util.make_ndarray(mine.Tensors("t")[0].tensor_proto)
        expected = values_of(dtype)
        assert got.dtype == expected.dtype and got.shape == expected.shape
        assert np.array_equal(got, expected, equal_nan=dtype != torch.bool)


def values_of(dtype: torch.dtype) -> np.ndarray:
    values = torch.tensor(AWKWARD)
    if dtype.is_complex:
        values = values + 0.5j * values.flip(0)
    return values.to(dtype).numpy()


def test_add_tensor_takes_numpy_arrays_and_refuses_other_values(tmp_path: Path) -> None:
    with SummaryWriter(str(tmp_path)) as writer:
        writer.add_tensor("array", np.arange(6, dtype=">i4").reshape(2, 3), 1)  # big-endian: read as its values
        for value in ([1, 2, 3], np.zeros(2, np.uint16), "text"):
            with pytest.raises(ValueError):
                writer.add_tensor("bad", value, 2)
    (event,) = _read(tmp_path).Tensors("array")
    got = tensor_util.make_ndarray(event.tensor_proto)
    assert got.dtype == np.int32 and got.tolist() == [[0, 1, 2], [3, 4, 5]]


def test_replay_reads_torchs_tensor_summaries_back_into_tensor_events(tmp_path: Path) -> None:
    """`metricbus replay` of a logdir torch's writer wrote: each add_tensor call comes back as a
    Tensor event holding that tensor's bytes, dtype and shape; written again by the TensorBoard
    sink, TensorBoard reads the same TensorProtos as from torch's files."""
    from producers._replay import replay
    from sinks import MemorySink, TensorBoardSink

    tensors = {}
    with TorchWriter(str(tmp_path / "torch")) as theirs:
        for dtype in TENSOR_DTYPES[:12]:
            name = str(dtype).removeprefix("torch.")
            tensors[name] = (
                torch.from_numpy(values_of(dtype)) if dtype != torch.bfloat16 else torch.tensor(AWKWARD).to(dtype)
            )
            theirs.add_tensor(name, tensors[name], 2)
    memory = MemorySink()
    stats = replay([tmp_path / "torch"], [(memory, {"isolate": "none"}), TensorBoardSink(tmp_path / "copy")])
    assert stats.ok and stats.bad == 0 and stats.sources[0].skipped == {}
    got = {e.name: e for e in memory.events}
    assert sorted(got) == sorted(tensors)
    for name, tensor in tensors.items():
        raw = tensor.view(torch.int16) if tensor.dtype == torch.bfloat16 else tensor
        assert (got[name].dtype, got[name].shape, got[name].step) == (name, tuple(tensor.shape), 2)
        assert got[name].data == raw.numpy().tobytes(), name
    real, copy = _read(tmp_path / "torch"), _read(tmp_path / "copy")
    for name in tensors:
        assert copy.Tensors(name)[0].tensor_proto == real.Tensors(name)[0].tensor_proto, name
