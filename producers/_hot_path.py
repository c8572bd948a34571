"""The training thread's two hot calls, `scalar` and `scalars`, built once per logger.

What a logging call costs the training thread is metricbus's first promise: at most twice a
bare method call that appends a tuple to a deque. Measured here, a plain method pays about
90 ns more than that for binding `self`, for attribute lookups and for keyword-only argument
handling, before doing anything; so the two calls are closures over the logger's state instead:
the deque's bound `append`, the set of names already validated, and a one-element list holding
the time at which the next batch is due (`due[0]`; the logger sets it to -inf to route every
call through its slow path: closed, a stop requested, a forked child).

A call that passes the cheap checks appends one row (a tuple for a Scalar, a list for a Metrics,
see `bus.wire`) with the wall time, and ships when the batch is due. Anything else (a new name,
an int, a numpy value, a tensor, an explicit wall time) takes the logger's validating path, which
raises `InvalidEvent` at this call for a bad value.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from bus import known_names

__all__ = ["ScalarCall", "ScalarsCall", "SlowPath", "hot_calls"]

MAX_STEP = 2**63 - 1
_FLOAT = frozenset((float,))


class ScalarCall(Protocol):
    def __call__(
        self, name: str, value: float, step: int, wall_time: float | None = None, epoch_end: bool = False
    ) -> None:
        """Log one value. Raises `InvalidEvent` here, at the call, for a bad name/value/step."""


class ScalarsCall(Protocol):
    def __call__(
        self, values: Mapping[str, float], step: int, wall_time: float | None = None, epoch_end: bool = False
    ) -> None:
        """Log many values at one step as one `Metrics` event (one W&B row, one CSV row)."""


class SlowPath(Protocol):
    """What the hot calls hand over to the logger."""

    def _scalar_slow(self, name: object, value: object, step: object, wall_time: float | None) -> None: ...
    def _scalars_slow(self, values: object, step: object, wall_time: float | None) -> None: ...
    def _due(self, now: float) -> None: ...


def hot_calls(
    logger: SlowPath,
    pending: deque[Any],
    due: list[float],
    skip: Callable[..., bool] | None,
) -> tuple[ScalarCall, ScalarsCall]:
    """The `scalar` and `scalars` calls of one logger. `skip(step, epoch_end=...)` is its log
    frequency (True: log this call; None: log every call, and pay nothing for the question)."""
    append = pending.append
    known = known_names
    clock = time.time
    scalar_slow, scalars_slow, ship = logger._scalar_slow, logger._scalars_slow, logger._due

    def scalar(name: str, value: float, step: int, wall_time: float | None = None, epoch_end: bool = False) -> None:
        if (
            type(name) is str
            and name in known
            and type(value) is float
            and type(step) is int
            and 0 <= step <= MAX_STEP
            and wall_time is None
        ):
            now = clock()
            append((name, value, step, now))
            if now >= due[0]:
                ship(now)
            return
        scalar_slow(name, value, step, wall_time)

    def scalars(
        values: Mapping[str, float], step: int, wall_time: float | None = None, epoch_end: bool = False
    ) -> None:
        if (
            type(values) is dict
            and type(step) is int
            and 0 <= step <= MAX_STEP
            and wall_time is None
            and known.issuperset(values)
            and _FLOAT.issuperset(map(type, values.values()))
        ):
            now = clock()
            append([dict(values), step, now])
            if now >= due[0]:
                ship(now)
            return
        scalars_slow(values, step, wall_time)

    if skip is None:
        return scalar, scalars

    def scalar_sometimes(
        name: str, value: float, step: int, wall_time: float | None = None, epoch_end: bool = False
    ) -> None:
        if skip(step, epoch_end=epoch_end):
            scalar(name, value, step, wall_time)

    def scalars_sometimes(
        values: Mapping[str, float], step: int, wall_time: float | None = None, epoch_end: bool = False
    ) -> None:
        if skip(step, epoch_end=epoch_end):
            scalars(values, step, wall_time)

    return scalar_sometimes, scalars_sometimes
