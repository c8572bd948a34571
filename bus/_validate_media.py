"""Coercion of the fields of the media and one-off events (Audio, Video, PrCurve, Mesh,
Embedding, Graph), with a typed error naming the field.

Bulk data travels as raw little-endian bytes whose layout the event's other fields describe, as
Image's pixels do: building an event costs one copy, and every sink reads the layout it needs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

from ._errors import InvalidEvent
from ._validate import MAX_IMAGE_BYTES, as_float_list, as_pixels, as_step, as_text, as_value

MAX_MEDIA_BYTES = MAX_IMAGE_BYTES
"""The most raw bytes one field of a media event may hold (64 MiB), as for an Image."""
AUDIO_CHANNELS = (1, 2)
"""Mono and stereo: what tensorboardX's add_audio writes."""
VIDEO_CHANNELS = (1, 3)
"""Grayscale and RGB frames: what tensorboardX's GIF writer takes."""
SPRITE_CHANNELS = (1, 3)
"""Embedding label images: grayscale or RGB squares (tensorboardX's sprite is RGB)."""
MIN_FPS = 1 / 200  # slower GIFs fail in the encoder (moviepy + its GIF writer): measured 219.1 s a frame at most
# with the versions installed today (329.8 s with earlier ones: the writer's units changed), so 200 s leaves room
"""The slowest frame rate a GIF can show: it stores each frame's time in 1/100 s as 16 bits."""
SPRITE_LIMIT = 8192
"""The largest embedding sprite TensorBoard's projector loads, in pixels a side."""
MAX_PR_THRESHOLDS = 127
"""tensorboardX caps a PR curve's thresholds at 127 (its summary says more "breaks protobuf")."""
TENSOR_DTYPES = {
    "float16": 2,
    "bfloat16": 2,
    "float32": 4,
    "float64": 8,
    "int8": 1,
    "uint8": 1,
    "int16": 2,
    "int32": 4,
    "int64": 8,
    "bool": 1,
    "complex64": 8,
    "complex128": 16,
}
"""A Tensor event's dtypes and their item sizes in bytes: the dtypes torch's add_tensor writes
(its complex32, uint16-64, float8 and quantized tensors fail there, so they are not here)."""
MAX_TENSOR_DIMS = 64
"""The most dimensions a Tensor event may have (torch's own limit)."""


def as_size(value: object, field: str, minimum: int = 1) -> int:
    """A count or a dimension: an int >= `minimum`."""
    size = as_step(value, field)
    if size < minimum:
        raise InvalidEvent(field, value, f"must be >= {minimum}")
    return size


def as_blob(value: object, field: str, itemsize: int, count: int) -> bytes:
    """Raw bytes of `count` items of `itemsize` bytes each, at most MAX_MEDIA_BYTES."""
    if count * itemsize > MAX_MEDIA_BYTES:
        raise InvalidEvent(field, f"{count} x {itemsize} bytes", f"is over the limit of {MAX_MEDIA_BYTES} bytes")
    data = as_pixels(value, field)
    if len(data) != count * itemsize:
        raise InvalidEvent(field, data, f"is {len(data)} bytes; its shape says {count * itemsize}")
    return data


def as_fps(value: object, field: str) -> float:
    """A frame rate: a finite number of at least MIN_FPS."""
    number = as_value(value, field)
    if not MIN_FPS <= number < math.inf:
        raise InvalidEvent(field, value, "must be a finite number >= 1/200 (a GIF frame lasts at most 200 s here)")
    return number


def as_choice(value: object, field: str, choices: Sequence[int]) -> int:
    number = as_step(value, field)
    if number not in choices:
        raise InvalidEvent(field, value, f"must be one of {', '.join(map(str, choices))}")
    return number


def as_shape3(value: object, field: str) -> tuple[int, int, int]:
    """A mesh tensor's shape: (batch, items, 3), each at least 1."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 3:
        raise InvalidEvent(field, value, "must be a (batch, items, 3) shape")
    shape = (as_size(value[0], f"{field}[0]"), as_size(value[1], f"{field}[1]"), as_size(value[2], f"{field}[2]"))
    if shape[2] != 3:
        raise InvalidEvent(field, value, "must end in 3 (x, y, z or r, g, b or three vertex indices)")
    return shape


def as_tensor_shape(value: object, field: str) -> tuple[int, ...]:
    """A tensor's shape: a sequence of at most MAX_TENSOR_DIMS sizes >= 0 (empty: a 0-d tensor)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) > MAX_TENSOR_DIMS:
        raise InvalidEvent(field, value, f"must be a sequence of at most {MAX_TENSOR_DIMS} sizes")
    return tuple(as_step(size, f"{field}[{i}]") for i, size in enumerate(value))


def as_tensor_dtype(value: object, field: str) -> str:
    if type(value) is not str or value not in TENSOR_DTYPES:
        raise InvalidEvent(field, value, f"must be one of {', '.join(TENSOR_DTYPES)}")
    return value


def as_curve(values: object, field: str, length: int | None) -> tuple[float, ...]:
    """One of a PR curve's six series: a non-empty sequence of numbers, all series of one length."""
    curve = as_float_list(values, field)
    if not curve:
        raise InvalidEvent(field, values, "must not be empty")
    if length is not None and len(curve) != length:
        raise InvalidEvent(field, values, f"has {len(curve)} values; true_positives has {length}")
    return curve


def as_json(value: object, field: str) -> str:
    """A JSON text (a mesh's three.js configuration)."""
    text = as_text(value, field)
    try:
        json.loads(text)
    except ValueError as exc:
        raise InvalidEvent(field, value, f"is not JSON ({exc})") from exc
    return text


def as_lines(values: object, field: str) -> tuple[str, ...]:
    """Lines of a TSV file: str without newlines (a newline would shift every later row)."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise InvalidEvent(field, values, "must be a sequence of str")
    lines = tuple(as_text(line, f"{field}[{i}]") for i, line in enumerate(values))
    for i, line in enumerate(lines):
        if "\n" in line or "\r" in line:
            raise InvalidEvent(f"{field}[{i}]", line, "must not contain a newline")
    return lines


def sprite_side(rows: int, size: int) -> int:
    """The side of tensorboardX's sprite of `rows` square images of `size` pixels: ceil(sqrt(rows))
    images a row (in its floating-point arithmetic), at most `rows`."""
    root: float = (rows * size * size) ** 0.5
    return min(rows, math.ceil(root / size)) * size


def as_sprite(rows: int, size: int, field: str) -> None:
    """Refuse label images whose sprite TensorBoard could not load."""
    side = sprite_side(rows, size)
    if side > SPRITE_LIMIT:
        raise InvalidEvent(
            field, f"{rows} x {size}x{size}", f"make a sprite of {side} pixels a side; at most {SPRITE_LIMIT}"
        )


_PBTXT_UNSAFE = ('"', "\\", "\n", "\r")
_MAX_FILE_NAME = 255  # bytes in one path component on common file systems


def as_projector_name(name: str) -> str:
    """An embedding's tag: tensorboardX writes it unescaped into projector_config.pbtxt (so no
    quote, backslash or newline) and, with '%' and '/' escaped, as a folder name."""
    if any(c in name for c in _PBTXT_UNSAFE):
        raise InvalidEvent("name", name, "an embedding tag must not contain quotes, backslashes or newlines")
    folder = name.replace("%", "%25").replace("/", "%2f")
    if folder in (".", "..") or len(folder.encode("utf-8")) > _MAX_FILE_NAME:
        raise InvalidEvent("name", name, f"an embedding tag must be a folder name of 1-{_MAX_FILE_NAME} bytes")
    return name
