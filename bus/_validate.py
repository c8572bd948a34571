"""Coercion of user values into event fields, with a typed error naming the field.

Fast paths first: a Python float, int or str costs one type check. numpy scalars, 0-d arrays and
0-d torch tensors go through `__float__`, without importing either library.
"""

from __future__ import annotations

import numbers
import operator
from collections.abc import Mapping
from typing import Any

from ._errors import InvalidEvent

MAX_NAME_LENGTH = 1_024
MAX_TEXT_LENGTH = 1_000_000


def as_name(value: object, field: str = "name") -> str:
    """A metric name: a non-empty str of at most MAX_NAME_LENGTH characters."""
    if type(value) is str and value and len(value) <= MAX_NAME_LENGTH:
        return value
    if type(value) is not str:
        raise InvalidEvent(field, value, f"must be a str, not {type(value).__name__}")
    if not value:
        raise InvalidEvent(field, value, "must not be empty")
    if len(value) > MAX_NAME_LENGTH:
        raise InvalidEvent(field, value, f"is {len(value)} characters, the limit is {MAX_NAME_LENGTH}")
    return value


def as_step(value: object, field: str = "step") -> int:
    """A step: an int >= 0 (numpy integers accepted; bools and floats are not)."""
    if type(value) is not int:
        if isinstance(value, bool) or not hasattr(value, "__index__"):
            raise InvalidEvent(field, value, f"must be an int, not {type(value).__name__}")
        value = operator.index(value)  # type: ignore[call-overload]
    if value < 0:  # type: ignore[operator]
        raise InvalidEvent(field, value, "must be >= 0")
    return value  # type: ignore[return-value]


def as_value(value: object, field: str = "value") -> float:
    """A metric value as a float. NaN and ±inf are legal and stay what they are."""
    kind = type(value)
    if kind is float:
        return value  # type: ignore[return-value]
    if kind is int:
        return float(value)  # type: ignore[arg-type]
    if kind is bool or isinstance(value, (str, bytes, bytearray)):
        raise InvalidEvent(field, value, f"must be a number, not {kind.__name__}")
    ndim = getattr(value, "ndim", 0)
    if ndim != 0:
        raise InvalidEvent(field, value, f"must be a scalar, got an array with {ndim} dimensions")
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise InvalidEvent(field, value, f"must be a number, not {kind.__name__}") from exc


def as_text(value: object, field: str = "text") -> str:
    """A text payload: a str of at most MAX_TEXT_LENGTH characters."""
    if type(value) is not str:
        raise InvalidEvent(field, value, f"must be a str, not {type(value).__name__}")
    if len(value) > MAX_TEXT_LENGTH:
        raise InvalidEvent(field, value, f"is {len(value)} characters, the limit is {MAX_TEXT_LENGTH}")
    return value


def as_values(values: object, field: str = "values") -> dict[str, float]:
    """A mapping of names to values, validated into a new dict the caller cannot mutate later.

    The loop is the hot path of `MetricLogger.scalars`: the field names for error messages are
    only formatted when something is wrong.
    """
    if not isinstance(values, Mapping):
        raise InvalidEvent(field, values, f"must be a mapping of names to numbers, not {type(values).__name__}")
    out: dict[str, float] = {}
    for key, value in values.items():
        if type(key) is not str or not key or len(key) > MAX_NAME_LENGTH:
            as_name(key, f"{field} key")
        if type(value) is not float:
            value = as_value(value, f"{field}[{key!r}]")
        out[key] = value
    return out


def as_float_list(values: object, field: str) -> tuple[float, ...]:
    """A flat sequence of numbers (list, tuple, numpy array or torch tensor of any shape)."""
    if isinstance(values, (str, bytes, Mapping)):
        raise InvalidEvent(field, values, "must be a sequence of numbers")
    items: Any = values
    if hasattr(items, "tolist"):  # numpy arrays and torch tensors: flatten without iterating in Python
        ravel = getattr(items, "ravel", None) or getattr(items, "flatten", None)
        flat = (ravel() if ravel is not None else items).tolist()
        items = flat if isinstance(flat, list) else [flat]
    try:
        return tuple(as_value(v, f"{field}[{i}]") for i, v in enumerate(items))
    except TypeError as exc:
        raise InvalidEvent(field, values, "must be a sequence of numbers") from exc


def as_param(value: object, field: str) -> str | float | int | bool:
    """A hyperparameter value: str, bool, int or float; anything else is logged as its str()."""
    if type(value) in (str, bool, int, float):
        return value  # type: ignore[return-value]
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real) or getattr(value, "ndim", None) == 0:
        return as_value(value, field)
    return as_text(str(value), field)
