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
MAX_PR_THRESHOLDS = 127
"""tensorboardX caps a PR curve's thresholds at 127 (its summary says more "breaks protobuf")."""


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


def as_positive(value: object, field: str) -> float:
    """A finite number > 0 (a frame rate)."""
    number = as_value(value, field)
    if not 0.0 < number < math.inf:
        raise InvalidEvent(field, value, "must be a finite number > 0")
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
