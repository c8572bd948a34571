"""Array conversions of the SummaryWriter's media methods, on the calling thread.

Each turns what a tensorboardX call takes (numpy arrays, torch tensors, lists) into the raw
fields of an event, with tensorboardX's layouts and scaling, in a few vectorized numpy passes.
What is heavy (WAV, GIF and PNG encoding, protobufs, projector files) happens in the sinks.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from bus import TENSOR_DTYPES, InvalidEvent

from ._summary_images import fill_uint8, host_values, image_pixels, to_nhwc

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "audio_samples",
    "boxed_image",
    "embedding_fields",
    "mesh_part",
    "onnx_graph",
    "openvino_graph",
    "pr_curve_series",
    "tensor_fields",
    "traced_graph",
    "video_frames",
]


def tensor_fields(tensor: Any, field: str = "tensor") -> dict[str, Any]:
    """A Tensor event's data, dtype and shape from a torch tensor (moved to the CPU, the one copy
    a GPU tensor needs) or a numpy array, of a dtype torch's add_tensor writes."""
    import numpy as np

    is_torch = callable(getattr(tensor, "detach", None))
    if not is_torch and not isinstance(tensor, np.ndarray):
        raise InvalidEvent(field, tensor, f"must be a torch tensor or numpy array, not {type(tensor).__name__}")
    dtype = str(tensor.dtype).removeprefix("torch.") if is_torch else tensor.dtype.name
    if dtype not in TENSOR_DTYPES:
        raise InvalidEvent(field, tensor, f"has unsupported tensor dtype {tensor.dtype}")
    shape = tuple(int(size) for size in tensor.shape)
    if is_torch:  # bfloat16 as its bit patterns: numpy has no bfloat16
        host = tensor.detach().cpu()
        array = (host.view(sys.modules["torch"].int16) if dtype == "bfloat16" else host).numpy()
    else:
        array = tensor
    data = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
    return {"data": data, "dtype": dtype, "shape": shape}


_PCM_SCALE = 32768.0  # libsndfile's float -> int16 scale: floor(x * 32768), clipped to int16
_MAX_THRESHOLDS = 127  # tensorboardX's cap on a PR curve's thresholds


def _real_array(value: Any, field: str) -> np.ndarray:
    """A numpy array of real numbers (a torch tensor moved to the CPU; lists read by numpy)."""
    import numpy as np

    try:
        array = np.asarray(host_values(value))
    except Exception as exc:
        raise InvalidEvent(field, value, f"cannot be read as an array ({type(exc).__name__})") from exc
    if array.dtype.kind not in "buif":
        raise InvalidEvent(field, value, f"must hold real numbers, not dtype {array.dtype}")
    return array


def audio_samples(snd_tensor: Any) -> tuple[bytes, int]:
    """(int16 PCM bytes, channels) of a clip of shape (frames,) or (frames, 1 or 2), values in
    [-1, 1], as tensorboardX's soundfile writes them: clipped to [-1, 1], times 32768, floored,
    clipped to int16 (NaN becomes 0)."""
    import numpy as np

    array = _real_array(snd_tensor, "snd_tensor")
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2 or array.shape[1] not in (1, 2) or array.shape[0] == 0:
        raise InvalidEvent("snd_tensor", array.shape, "must be (frames,) or (frames, channels), channels 1 or 2")
    scaled = array.astype(np.float32 if array.dtype == np.float32 else np.float64)  # a copy; x * 32768 is exact
    np.nan_to_num(scaled, copy=False, nan=0.0)
    np.clip(scaled, -1.0, 1.0, out=scaled)
    np.multiply(scaled, _PCM_SCALE, out=scaled)
    np.floor(scaled, out=scaled)
    np.minimum(scaled, 32767.0, out=scaled)
    return scaled.astype("<i2").tobytes(), array.shape[1]


def video_frames(vid_tensor: Any, dataformats: str) -> np.ndarray:
    """uint8 frames (T, H, W, C) of a batch of clips in any order of N, T, C, H, W, laid out as
    tensorboardX lays them out (tensorboardX.utils' own conversion: clips side by side, the
    batch padded to a power of two) and scaled as images are."""
    import numpy as np
    from tensorboardX.utils import _prepare_video, convert_to_NTCHW

    array = _real_array(vid_tensor, "vid_tensor")
    if not isinstance(dataformats, str) or sorted(dataformats.upper()) != sorted("NTCHW"):
        raise InvalidEvent("dataformats", dataformats, "must name the axes N, T, C, H, W, in any order")
    if array.ndim != 5 or 0 in array.shape:
        raise InvalidEvent("vid_tensor", array.shape, "must be a 5-d batch of clips (NTCHW), none of size 0")
    ntchw = convert_to_NTCHW(array, dataformats.upper())
    if ntchw.shape[2] not in (1, 3):
        raise InvalidEvent("vid_tensor", array.shape, f"has {ntchw.shape[2]} channels; videos take 1 or 3")
    laid_out = _prepare_video(ntchw)
    frames = np.empty(laid_out.shape, np.uint8)
    fill_uint8(frames, laid_out)
    return frames


def pr_curve_series(labels: Any, predictions: Any, num_thresholds: Any, weights: Any) -> dict[str, Any]:
    """The fields of a PrCurve: its six series (TP, FP, TN, FN, precision, recall), computed as
    tensorboardX computes them (two numpy histograms), and the thresholds capped at 127 as it
    caps them."""
    from tensorboardX.summary import compute_curve

    if isinstance(num_thresholds, bool) or not isinstance(num_thresholds, int) or num_thresholds < 1:
        raise InvalidEvent("num_thresholds", num_thresholds, "must be an int >= 1")
    thresholds = min(num_thresholds, _MAX_THRESHOLDS)
    truth, scores = _real_array(labels, "labels"), _real_array(predictions, "predictions")
    if truth.shape != scores.shape or truth.size == 0:
        raise InvalidEvent("labels", truth.shape, f"must be non-empty and match predictions {scores.shape}")
    weighting = None if weights is None else _real_array(weights, "weights")
    try:
        curve = compute_curve(truth, scores, num_thresholds=thresholds, weights=weighting)
    except ValueError as exc:  # numpy cannot bin the predictions (NaN or inf among them)
        raise InvalidEvent("predictions", scores.shape, f"cannot be binned ({exc})") from exc
    names = ("true_positives", "false_positives", "true_negatives", "false_negatives", "precision", "recall")
    return {**dict(zip(names, curve.tolist(), strict=True)), "num_thresholds": thresholds}


def mesh_part(tensor: Any, field: str) -> tuple[bytes, tuple[int, int, int]]:
    """float32 bytes and shape of a mesh tensor of shape (batch, items, 3)."""
    array = _real_array(tensor, field)
    if array.ndim != 3 or array.shape[2] != 3:
        raise InvalidEvent(field, array.shape, "must be of shape (batch, items, 3)")
    return array.astype("<f4").tobytes(), (array.shape[0], array.shape[1], array.shape[2])


def mesh_config(config_dict: Any) -> str:
    """The three.js configuration as tensorboardX stores it: JSON with sorted keys."""
    try:
        return json.dumps(config_dict, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise InvalidEvent("config_dict", config_dict, f"cannot be written as JSON ({exc})") from exc


def _metadata_lines(metadata: Any, rows: int, header: Any) -> dict[str, Any]:
    """tensorboardX's metadata.tsv lines: str() of each label, or with a header, each row's
    columns joined by tabs."""
    try:
        labels = list(host_values(metadata)) if not isinstance(metadata, (str, bytes)) else None
    except TypeError:  # not iterable
        labels = None
    if labels is None or len(labels) != rows:
        raise InvalidEvent("metadata", metadata, f"must hold one label per point ({rows})")
    if not header:
        return {"metadata": [str(label) for label in labels]}
    columns = len(header)
    if any(isinstance(row, str) or not isinstance(row, Sequence) or len(row) != columns for row in labels):
        raise InvalidEvent("metadata", metadata, f"with a header, each label must be a row of {columns} columns")
    return {
        "metadata": ["\t".join(str(cell) for cell in row) for row in labels],
        "metadata_header": "\t".join(str(cell) for cell in header),
    }


def _sprite_images(label_img: Any, rows: int) -> dict[str, Any]:
    """Label images (N, C, H, W), square, 1 or 3 channels, as uint8 NHWC bytes."""
    import numpy as np

    array = _real_array(label_img, "label_img")
    if array.ndim != 4 or array.shape[0] != rows or array.shape[1] not in (1, 3) or array.shape[2] != array.shape[3]:
        raise InvalidEvent("label_img", array.shape, f"must be ({rows}, 1 or 3, size, size): one square per point")
    size = array.shape[2]  # a sprite over TensorBoard's limit is refused by Embedding
    nhwc = array.transpose(0, 2, 3, 1)
    pixels = np.empty(nhwc.shape, np.uint8)
    fill_uint8(pixels, nhwc)
    return {"label_pixels": pixels.tobytes(), "label_size": size, "label_channels": array.shape[1]}


def embedding_fields(mat: Any, metadata: Any, label_img: Any, metadata_header: Any) -> dict[str, Any]:
    """The fields of an Embedding: the points as float64, metadata lines, label images."""

    points = _real_array(mat, "mat")
    if points.ndim != 2 or 0 in points.shape:
        raise InvalidEvent("mat", points.shape, "must be 2-d (points x dimensions), not empty")
    rows, dims = points.shape
    fields: dict[str, Any] = {"values": points.astype("<f8").tobytes(), "rows": rows, "dims": dims}
    if metadata is not None:
        fields.update(_metadata_lines(metadata, rows, metadata_header))
    if label_img is not None:
        fields.update(_sprite_images(label_img, rows))
    return fields


def boxed_image(
    img_tensor: Any, box_tensor: Any, dataformats: str, labels: Sequence[str] | None, rescale: float
) -> tuple[bytes, int, int, int]:
    """An image with its boxes drawn, as tensorboardX draws them (its own PIL drawing: red
    outlines, labels on a red band; grayscale becomes RGB first), as Image fields."""
    import numpy as np
    from PIL import Image as PILImage
    from tensorboardX.summary import draw_boxes

    nhwc = to_nhwc(_real_array(img_tensor, "img_tensor"), dataformats)
    if nhwc.shape[0] != 1:
        raise InvalidEvent("img_tensor", nhwc.shape, "add_image_with_boxes takes one image")
    if nhwc.shape[3] == 1:
        nhwc = np.repeat(nhwc, 3, axis=3)
    pixels, height, width, channels = image_pixels(nhwc)
    boxes = _real_array(box_tensor, "box_tensor")
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise InvalidEvent("box_tensor", boxes.shape, "must be (boxes, 4): xmin, ymin, xmax, ymax")
    mode = "RGB" if channels == 3 else "RGBA"
    picture = draw_boxes(PILImage.frombytes(mode, (width, height), pixels), boxes, labels=labels)
    if rescale != 1:
        size = (int(width * rescale), int(height * rescale))
        picture = picture.resize(size, PILImage.Resampling.LANCZOS)
    return picture.tobytes(), picture.height, picture.width, channels


def traced_graph(model: Any, input_to_model: Any, verbose: bool, use_strict_trace: bool) -> tuple[bytes, bytes]:
    """(GraphDef, RunMetadata) of a torch model, serialized: traced with torch.jit here, where
    the model lives, by the code tensorboardX and torch.utils.tensorboard both use."""
    from torch.utils.tensorboard._pytorch_graph import graph

    graph_def, step_stats = graph(model, input_to_model, verbose, use_strict_trace)  # type: ignore[no-untyped-call]
    return graph_def.SerializeToString(), step_stats.SerializeToString()


def onnx_graph(onnx_model_file: str) -> bytes:
    """The GraphDef of an ONNX model file, read by tensorboardX's loader (needs `onnx`)."""
    from tensorboardX.onnx_graph import load_onnx_graph

    return bytes(load_onnx_graph(onnx_model_file).SerializeToString())


def openvino_graph(xmlname: str) -> bytes:
    """The GraphDef of an OpenVINO model (its .xml file), read by tensorboardX's loader."""
    from tensorboardX.openvino_graph import load_openvino_graph

    return bytes(load_openvino_graph(xmlname).SerializeToString())
