"""Coercion of user values into event fields, with a typed error naming the field.

Fast paths first: a Python float, int or str costs one type check (a name one set lookup). numpy
scalars, one-element arrays and one-element torch tensors go through `.item()`, without importing
either library. Every other failure while reading a value (OverflowError, RuntimeError, anything
raised by `__float__`, `__index__`, `.item()` or `.tolist()`) becomes `InvalidEvent`, with the
cause chained, so nothing but `InvalidEvent` escapes an event constructor.
"""

from __future__ import annotations

import math
import numbers
import operator
import sys
from collections.abc import Mapping
from typing import Any

from ._errors import InvalidEvent

MAX_NAME_LENGTH = 1_024
MAX_TEXT_LENGTH = 1_000_000
MAX_STEP = 2**63 - 1
"""Steps, ranks, epochs and rounds are int64 in TensorBoard and msgpack: beyond it they wrap or fail."""
MAX_WALL_TIME = sys.float_info.max
MAX_IMAGE_BYTES = 64 * 2**20
"""The most raw pixel bytes one Image may hold (4096 x 4096 RGBA): an event is copied into every
sink's buffer and, for a sink in a worker process, through a pipe."""
MIN_PARAM_INT, MAX_PARAM_INT = -(2**63), 2**63 - 1
"""An int hyperparameter must fit an int64: msgspec cannot encode a wider int to a worker or a file."""

_REAL_KINDS = ("f", "i", "u")
"""numpy dtype kinds that hold real numbers; bool, complex, datetime, str and object do not."""

known_names: set[str] = set()
"""Names that passed `as_name`: metric names repeat, so a repeat costs one set lookup."""
_KNOWN_NAMES_LIMIT = 100_000


def _check_utf8(value: str, field: str) -> None:
    """Refuse a str that UTF-8 cannot encode (lone surrogates): every sink writes UTF-8."""
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidEvent(field, value, f"cannot be encoded as UTF-8 ({exc.reason} at {exc.start})") from exc


def as_name(value: object, field: str = "name") -> str:
    """A metric name: a non-empty str of at most MAX_NAME_LENGTH characters, valid UTF-8 and
    without NUL, which breaks TensorBoard tags and the file formats that use names as keys."""
    if type(value) is str and value in known_names:
        return value
    if type(value) is not str:
        raise InvalidEvent(field, value, f"must be a str, not {type(value).__name__}")
    if not value:
        raise InvalidEvent(field, value, "must not be empty")
    if len(value) > MAX_NAME_LENGTH:
        raise InvalidEvent(field, value, f"is {len(value)} characters, the limit is {MAX_NAME_LENGTH}")
    if "\x00" in value:
        raise InvalidEvent(field, value, "must not contain NUL characters")
    _check_utf8(value, field)
    if len(known_names) < _KNOWN_NAMES_LIMIT:
        known_names.add(value)
    return value


def as_text(value: object, field: str = "text") -> str:
    """A text payload: a str of at most MAX_TEXT_LENGTH characters that UTF-8 can encode.

    NUL is allowed here, unlike in names: text is a payload (a model's sample may hold anything)
    and every sink stores it escaped (JSON) or length-prefixed (protobuf), never as a key.
    """
    if type(value) is not str:
        raise InvalidEvent(field, value, f"must be a str, not {type(value).__name__}")
    if len(value) > MAX_TEXT_LENGTH:
        raise InvalidEvent(field, value, f"is {len(value)} characters, the limit is {MAX_TEXT_LENGTH}")
    _check_utf8(value, field)
    return value


def _item(value: Any, field: str) -> object:
    """The Python scalar in a numpy scalar or a one-element numpy array / torch tensor."""
    shape = tuple(value.shape)
    if math.prod(shape) != 1:
        raise InvalidEvent(field, value, f"must be a single number, not an array of shape {shape}")
    return value.item()


def _is_array_like(value: object) -> bool:
    """numpy scalars and arrays, torch tensors (and jax arrays): what `_item` can read."""
    return hasattr(value, "dtype") and hasattr(value, "shape") and hasattr(value, "item")


def _not_real_dtype(value: Any) -> bool:
    """True for a numpy dtype that is not float/int/uint (torch dtypes have no `kind`)."""
    kind = getattr(value.dtype, "kind", None)
    return kind is not None and kind not in _REAL_KINDS


def _read_value(value: object, field: str) -> float:
    """`as_value` past its fast paths; may raise anything, which `as_value` turns into InvalidEvent."""
    kind = type(value)
    if kind is bool or isinstance(value, (str, bytes, bytearray)):
        raise InvalidEvent(field, value, f"must be a number, not {kind.__name__}")
    if isinstance(value, complex):
        raise InvalidEvent(field, value, "must be a real number, not complex")
    if _is_array_like(value):
        if _not_real_dtype(value):
            raise InvalidEvent(field, value, f"must be a real number, not {kind.__name__} of dtype {value.dtype}")  # type: ignore[attr-defined]
        number = _item(value, field)
        if type(number) is float:
            return number
        if type(number) is bool or not isinstance(number, numbers.Real):  # torch bool and complex tensors
            raise InvalidEvent(field, value, f"must be a real number, not {kind.__name__} of dtype {value.dtype}")  # type: ignore[attr-defined]
        return float(number)
    return float(value)  # type: ignore[arg-type]


def as_value(value: object, field: str = "value") -> float:
    """A metric value as a float. NaN and ±inf are legal and stay what they are; bool and complex
    are refused (a bool is not a measurement, and a complex number has no float)."""
    kind = type(value)
    if kind is float:
        return value  # type: ignore[return-value]
    try:
        if kind is int:
            return float(value)  # type: ignore[arg-type]
        return _read_value(value, field)
    except InvalidEvent:
        raise
    except OverflowError as exc:
        raise InvalidEvent(field, value, "is too large for a float") from exc
    except Exception as exc:
        raise InvalidEvent(field, value, f"must be a number, not {kind.__name__} ({type(exc).__name__})") from exc


def as_wall_time(value: object, field: str = "wall_time") -> float:
    """Seconds since the epoch: a finite float >= 0 (TensorBoard cannot read NaN or inf times)."""
    seconds = as_value(value, field)
    if not 0.0 <= seconds <= MAX_WALL_TIME:
        raise InvalidEvent(field, value, "must be a finite number >= 0")
    return seconds


def _read_int(value: object, field: str) -> int:
    """An int from a numpy integer, a one-element integer array/tensor or an `__index__` type."""
    if isinstance(value, bool):
        raise InvalidEvent(field, value, "must be an int, not bool")
    if _is_array_like(value):
        number = _item(value, field)
        if type(number) is not int:  # float, bool, complex arrays and tensors
            raise InvalidEvent(field, value, f"must be an int, not {type(value).__name__} of dtype {value.dtype}")  # type: ignore[attr-defined]
        return number
    if not hasattr(value, "__index__"):
        raise InvalidEvent(field, value, f"must be an int, not {type(value).__name__}")
    return int(operator.index(value))  # type: ignore[call-overload]


def as_step(value: object, field: str = "step") -> int:
    """A step (or a rank, epoch, round): an int in 0 ..= 2**63-1, the int64 every file format
    stores. numpy integers and one-element integer arrays/tensors are accepted, as tensorboardX
    does (`int(step)`); bools and floats are not."""
    if type(value) is not int:
        try:
            value = _read_int(value, field)
        except InvalidEvent:
            raise
        except Exception as exc:
            raise InvalidEvent(
                field, value, f"must be an int, not {type(value).__name__} ({type(exc).__name__})"
            ) from exc
    if value < 0:  # type: ignore[operator]
        raise InvalidEvent(field, value, "must be >= 0")
    if value > MAX_STEP:  # type: ignore[operator]
        raise InvalidEvent(field, value, "must be at most 2**63-1 (an int64)")
    return value  # type: ignore[return-value]


def as_values(values: object, field: str = "values") -> dict[str, float]:
    """A mapping of names to values, validated into a new dict the caller cannot mutate later.

    The loop is the hot path of `MetricLogger.scalars`: the field names for error messages are
    only formatted when something is wrong.
    """
    if type(values) is not dict:
        if not isinstance(values, Mapping):
            raise InvalidEvent(field, values, f"must be a mapping of names to numbers, not {type(values).__name__}")
        try:
            values = dict(values.items())
        except Exception as exc:
            raise InvalidEvent(field, values, f"cannot be read as a mapping ({type(exc).__name__})") from exc
    known = known_names
    out: dict[str, float] = {}
    for key, value in values.items():  # type: ignore[attr-defined]
        if type(key) is not str or key not in known:
            as_name(key, f"{field} key")
        out[key] = value if type(value) is float else as_value(value, f"{field}[{key!r}]")
    return out


def _flat_items(values: Any, field: str) -> list[Any]:
    """The elements of a sequence, or of a numpy array / torch tensor of any shape, flattened."""
    if hasattr(values, "tolist"):  # numpy arrays and torch tensors: flatten without iterating in Python
        if hasattr(values, "dtype") and _not_real_dtype(values):
            raise InvalidEvent(field, values, f"must be real numbers, not dtype {values.dtype}")
        ravel = getattr(values, "ravel", None) or getattr(values, "flatten", None)
        flat = (ravel() if ravel is not None else values).tolist()
        return flat if isinstance(flat, list) else [flat]
    return list(values)


def as_float_list(values: object, field: str) -> tuple[float, ...]:
    """A flat sequence of real numbers (list, tuple, numpy array or torch tensor of any shape)."""
    if isinstance(values, (str, bytes, bytearray, Mapping)):
        raise InvalidEvent(field, values, "must be a sequence of numbers")
    try:
        items = _flat_items(values, field)
    except InvalidEvent:
        raise
    except Exception as exc:
        raise InvalidEvent(field, values, f"must be a sequence of numbers ({type(exc).__name__})") from exc
    out: list[float] = []
    for i, value in enumerate(items):
        out.append(value if type(value) is float else as_value(value, f"{field}[{i}]"))
    return tuple(out)


def _param_int(value: int, field: str) -> int:
    if not MIN_PARAM_INT <= value <= MAX_PARAM_INT:
        raise InvalidEvent(field, value, "must fit an int64; log a wider int as a str")
    return value


def _read_param(value: object, field: str) -> str | float | int | bool:
    """`as_param` past its fast path; may raise anything, which `as_param` turns into InvalidEvent."""
    if _is_array_like(value) and math.prod(tuple(value.shape)) == 1:  # type: ignore[attr-defined]
        value = value.item()  # type: ignore[attr-defined]
        if type(value) in (str, bool, int, float):
            return as_param(value, field)
    if isinstance(value, numbers.Integral):
        return _param_int(int(value), field)
    if isinstance(value, numbers.Real):
        return as_value(value, field)
    return as_text(str(value), field)


def as_param(value: object, field: str) -> str | float | int | bool:
    """A hyperparameter value: str, bool, int (int64) or float; numpy scalars and one-element
    arrays/tensors become the Python value inside; anything else is logged as its str()."""
    kind = type(value)
    if kind is float or kind is bool:
        return value  # type: ignore[return-value]
    if kind is int:
        return _param_int(value, field)  # type: ignore[arg-type]
    if kind is str:
        return as_text(value, field)
    try:
        return _read_param(value, field)
    except InvalidEvent:
        raise
    except Exception as exc:
        raise InvalidEvent(field, value, f"cannot be read as a hyperparameter ({type(exc).__name__})") from exc


def as_pixels(value: object, field: str = "pixels") -> bytes:
    """Raw pixel bytes: bytes as they are; a bytearray or memoryview is copied into bytes, so that
    nothing can change an event's pixels after it was built. Arrays are refused: their shape and
    dtype are the caller's to convert (SummaryWriter.add_image does)."""
    if type(value) is bytes:
        return value
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise InvalidEvent(field, value, f"must be bytes, not {type(value).__name__}")
    try:
        return bytes(value)
    except Exception as exc:  # a released memoryview
        raise InvalidEvent(field, value, f"cannot be read as bytes ({type(exc).__name__})") from exc


IMAGE_CHANNELS = (1, 3, 4)
"""Grayscale, RGB and RGBA: the colour types a PNG, TensorBoard and wandb.Image all take."""


def as_image_shape(pixels: bytes, height: object, width: object, channels: object) -> tuple[int, int, int]:
    """(height, width, channels) of an image whose `pixels` are uint8 rows of width x channels
    bytes: each dimension at least 1, channels 1, 3 or 4, at most MAX_IMAGE_BYTES in all, and as
    many bytes as the three say."""
    h = as_step(height, "height")
    w = as_step(width, "width")
    c = as_step(channels, "channels")
    if h < 1:
        raise InvalidEvent("height", height, "must be >= 1")
    if w < 1:
        raise InvalidEvent("width", width, "must be >= 1")
    if c not in IMAGE_CHANNELS:
        raise InvalidEvent("channels", channels, "must be 1 (grayscale), 3 (RGB) or 4 (RGBA)")
    size = h * w * c
    if size > MAX_IMAGE_BYTES:
        raise InvalidEvent("pixels", f"{h}x{w}x{c}", f"is {size} bytes, the limit is {MAX_IMAGE_BYTES}")
    if len(pixels) != size:
        raise InvalidEvent("pixels", pixels, f"is {len(pixels)} bytes; height x width x channels is {size}")
    return h, w, c
