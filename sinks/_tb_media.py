"""TensorBoard records for the media and one-off events, built with tensorboardX's summary code.

`media_summary` gives the Summary of an Audio, Video, PrCurve or Mesh event; `tensor_summary` the
Summary of a Tensor, field for field as torch's `add_tensor` writes it; `graph_events` the
Event protobufs of a Graph; `write_projector` the PROJECTOR files of an Embedding, laid out as
tensorboardX's `add_embedding` lays them out. The TensorBoard sink calls these off the training
thread (in its worker process by default).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bus import Audio, Embedding, Graph, Mesh, PrCurve, Tensor, Video

from ._audio import encode_wav
from ._png import encode_png
from ._video import encode_gif

if TYPE_CHECKING:
    import numpy as np

__all__ = ["graph_events", "media_summary", "projector_subdir", "tensor_summary", "write_projector"]


def media_summary(event: Audio | Video | PrCurve | Mesh) -> Any:
    """The tensorboardX Summary of one Audio, Video, PrCurve or Mesh event."""
    from tensorboardX.proto.summary_pb2 import Summary

    match event:
        case Audio(name=name, samples=samples, channels=channels, sample_rate=rate):
            wav = encode_wav(samples, channels, rate)
            audio = Summary.Audio(
                sample_rate=rate,
                num_channels=channels,
                length_frames=event.frames,
                encoded_audio_string=wav,
                content_type="audio/wav",
            )
            return Summary(value=[Summary.Value(tag=name, audio=audio)])
        case Video(name=name, height=height, width=width, channels=channels):
            image = Summary.Image(
                height=height, width=width, colorspace=channels, encoded_image_string=encode_gif(event)
            )
            return Summary(value=[Summary.Value(tag=name, image=image)])
        case PrCurve(name=name):
            from tensorboardX.summary import pr_curve_raw

            series = (event.true_positives, event.false_positives, event.true_negatives, event.false_negatives)
            return pr_curve_raw(name, *series, event.precision, event.recall, event.num_thresholds)
        case Mesh(name=name):
            from tensorboardX.summary import mesh

            parts = [_mesh_part(event, part) for part in ("vertices", "colors", "faces")]
            return mesh(name, *parts, json.loads(event.config))


# torch's _TENSOR_TYPE_MAP: a dtype's TensorProto dtype, the field its values go in, and how the
# raw bytes are read for that field (half floats: as torch's half_to_int, the bits of the value
# as a float32; complex: real and imaginary parts, interleaved as they are in memory).
_TENSOR_FIELDS = {
    "float16": ("DT_HALF", "half_val", "<f2"),
    "bfloat16": ("DT_BFLOAT16", "half_val", "bfloat16"),
    "float32": ("DT_FLOAT", "float_val", "<f4"),
    "float64": ("DT_DOUBLE", "double_val", "<f8"),
    "int8": ("DT_INT8", "int_val", "<i1"),
    "uint8": ("DT_UINT8", "uint32_val", "<u1"),
    "int16": ("DT_INT16", "int_val", "<i2"),
    "int32": ("DT_INT32", "int_val", "<i4"),
    "int64": ("DT_INT64", "int64_val", "<i8"),
    "bool": ("DT_BOOL", "bool_val", "?"),
    "complex64": ("DT_COMPLEX64", "scomplex_val", "<f4"),
    "complex128": ("DT_COMPLEX128", "dcomplex_val", "<f8"),
}
_UINT32_VAL = 16  # TensorProto.uint32_val: torch writes uint8 there; tensorboardX's proto lacks it


def tensor_summary(event: Tensor) -> Any:
    """The Summary torch's `add_tensor` writes: plugin "tensor", a TensorProto of the event's
    dtype and shape with the values in the field torch puts them in."""
    import numpy as np
    from tensorboardX.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboardX.proto.tensor_pb2 import TensorProto
    from tensorboardX.proto.tensor_shape_pb2 import TensorShapeProto

    dtype, field, layout = _TENSOR_FIELDS[event.dtype]
    shape = TensorShapeProto(dim=[TensorShapeProto.Dim(size=size) for size in event.shape])
    if layout == "bfloat16":  # a bfloat16 is the top half of a float32
        values = (np.frombuffer(event.data, "<u2").astype("<u4") << 16).view("<f4")
    else:
        values = np.frombuffer(event.data, layout)
    if field == "half_val":  # torch: struct.pack("f", float(x)) read back as an int32
        with np.errstate(invalid="ignore"):  # NaNs go through as NaNs, as in torch
            values = values.astype("<f8").astype("<f4").view("<i4")
    if field == "uint32_val":
        proto = TensorProto.FromString(
            TensorProto(dtype=dtype, tensor_shape=shape).SerializeToString() + _packed_varints(_UINT32_VAL, values)
        )
    else:
        proto = TensorProto(dtype=dtype, tensor_shape=shape, **{field: values.tolist()})
    metadata = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name="tensor"))
    return Summary(value=[Summary.Value(tag=event.name, metadata=metadata, tensor=proto)])


def _packed_varints(number: int, values: np.ndarray) -> bytes:
    """A packed repeated varint field of bytes (0-255): one varint byte below 128, two from it."""
    import numpy as np

    if not values.size:
        return b""
    flat = values.astype("<u2").ravel()
    high = flat >= 0x80
    pairs = np.stack([np.where(high, flat & 0x7F | 0x80, flat), flat >> 7], axis=1).astype("u1")
    body = pairs[np.stack([np.ones_like(high), high], axis=1)].tobytes()
    return _varint(number << 3 | 2) + _varint(len(body)) + body


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _mesh_part(event: Mesh, part: str) -> np.ndarray | None:
    import numpy as np

    data, shape = getattr(event, part), getattr(event, f"{part}_shape")
    return None if data is None else np.frombuffer(data, "<f4").reshape(shape)


def graph_events(event: Graph) -> list[Any]:
    """A Graph as tensorboardX's add_graph writes it: the GraphDef, then the step stats as the
    run metadata tagged 'profiler' (add_onnx_graph writes no run metadata)."""
    from tensorboardX.proto.event_pb2 import Event as EventProto
    from tensorboardX.proto.event_pb2 import TaggedRunMetadata

    events = [EventProto(wall_time=event.wall_time, step=event.step, graph_def=event.graph_def)]
    if event.run_metadata:
        tagged = TaggedRunMetadata(tag="profiler", run_metadata=event.run_metadata)
        events.append(EventProto(wall_time=event.wall_time, step=event.step, tagged_run_metadata=tagged))
    return events


def projector_subdir(tag: str, step: int) -> str:
    """tensorboardX's folder of one embedding: `<step, 5 digits>/<tag with %, / and \\ escaped>`."""
    escaped = tag.replace("%", "%25").replace("/", "%2f").replace("\\", "%5c")
    return f"{str(step).zfill(5)}/{escaped}"


def write_projector(run: Path, event: Embedding) -> None:
    """The files TensorBoard's PROJECTOR reads, in the run's directory: tensors.tsv, metadata.tsv
    and sprite.png in `projector_subdir`, and an entry in projector_config.pbtxt. Writing the
    same event again (a retried batch) rewrites the files and adds no second entry."""
    import numpy as np
    from tensorboardX.embedding import make_mat

    subdir = projector_subdir(event.name, event.step)
    folder = run / subdir
    folder.mkdir(parents=True, exist_ok=True)
    make_mat(np.frombuffer(event.values, "<f8").reshape(event.rows, event.dims), str(folder))
    if event.metadata is not None:
        header = [] if event.metadata_header is None else [event.metadata_header]
        with open(folder / "metadata.tsv", "w", encoding="utf8") as file:
            file.writelines(f"{line}\n" for line in [*header, *event.metadata])
    if event.label_pixels is not None:
        (folder / "sprite.png").write_bytes(_sprite(event))
    _add_config_entry(run / "projector_config.pbtxt", _config_entry(event, subdir))


def _sprite(event: Embedding) -> bytes:
    """The label images as tensorboardX's sprite: squares side by side in rows of
    ceil(sqrt(n)), RGB, on a square canvas (its unused bottom black), as a PNG."""
    import numpy as np

    size, count = event.label_size, event.rows
    images = np.frombuffer(event.label_pixels or b"", np.uint8).reshape(count, size, size, event.label_channels)
    per_row = min(count, math.ceil((count * size * size) ** 0.5 / size))  # tensorboardX's arithmetic
    side = per_row * size  # at most 8192: Embedding refuses larger sprites
    canvas = np.zeros((side, side, 3), np.uint8)  # rows <= per_row: the images fit in the square
    for i in range(count):
        row, column = divmod(i, per_row)
        canvas[row * size : (row + 1) * size, column * size : (column + 1) * size] = images[i]  # 1 channel: grey
    return encode_png(canvas.tobytes(), side, side, 3)


def _config_entry(event: Embedding, subdir: str) -> str:
    """The projector_config.pbtxt entry tensorboardX appends for an embedding."""
    lines = [
        "embeddings {",
        f'tensor_name: "{event.name}:{str(event.step).zfill(5)}"',
        f'tensor_path: "{subdir}/tensors.tsv"',
    ]
    if event.metadata is not None:
        lines.append(f'metadata_path: "{subdir}/metadata.tsv"')
    if event.label_pixels is not None:
        size = event.label_size
        dims = [f"single_image_dim: {size}"] * 2  # width, then height: the images are square
        lines += ["sprite {", f'image_path: "{subdir}/sprite.png"', *dims, "}"]
    lines.append("}")
    return "".join(f"{line}\n" for line in lines)


def _add_config_entry(path: Path, entry: str) -> None:
    existing = path.read_text(encoding="utf8") if path.exists() else ""
    if entry not in existing:
        with open(path, "a", encoding="utf8") as file:
            file.write(entry)
