"""Per-sink rate control: fewer, reduced rows for a sink that wants them (W&B, any service).

A `RateLimit` on a route folds the Scalar and Metrics events of each origin into one Metrics row
per window (`per_second` windows of wall time, or `every` steps), reducing each metric's values
in the window (`last`, `mean`, `min`, `max`), so a chart of a 1,000 steps/s loop still shows the
true curve while the other sinks get every step. Every event folded into a row is counted as
`reduced` in the sink's stats; other event kinds pass through untouched.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import msgspec

from ._errors import InvalidConfig
from ._events import Context, Event, Metrics, Origin, Scalar

__all__ = ["RateLimit", "Reducer"]

Reduction = Literal["last", "mean", "min", "max"]


class RateLimit(msgspec.Struct, frozen=True):
    """At most `per_second` rows per second per origin, or one row per `every` steps; each row
    holds, per metric, the `reduce` of the values logged in its window."""

    per_second: float | None = None
    every: int | None = None
    reduce: Reduction = "last"

    def __post_init__(self) -> None:
        if (self.per_second is None) == (self.every is None):
            raise InvalidConfig("RateLimit takes one of per_second=... or every=...")
        if self.per_second is not None and not (self.per_second > 0 and math.isfinite(self.per_second)):
            raise InvalidConfig(f"per_second must be a positive number, got {self.per_second!r}")
        if self.every is not None and (type(self.every) is not int or self.every < 1):
            raise InvalidConfig(f"every must be an int >= 1, got {self.every!r}")
        if self.reduce not in ("last", "mean", "min", "max"):
            raise InvalidConfig(f"reduce must be 'last', 'mean', 'min' or 'max', got {self.reduce!r}")


@dataclass
class _Window:
    """One origin's open window: the last step, wall time and context seen, and per metric the
    running reduction (mean keeps a sum and a count)."""

    key: float
    arrived: float  # time.monotonic() when the window's latest event arrived
    step: int
    wall_time: float
    context: Context | None
    values: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


class Reducer:
    """Folds a route's Scalar/Metrics events into one row per (origin, window)."""

    def __init__(self, limit: RateLimit) -> None:
        self.limit = limit
        self.reduced = 0  # events folded into another event's row
        self._open: dict[Origin, _Window] = {}
        self._width = 1.0 / limit.per_second if limit.per_second is not None else 0.0

    @property
    def held(self) -> int:
        """Rows still open (each stands for the events folded into it)."""
        return len(self._open)

    def add(self, event: Event) -> list[Event]:
        """Take one event; returns what is ready for the sink: rows of windows it closed, or the
        event itself if it is not a kind that is reduced."""
        match event:
            case Scalar(name=name, value=value):
                return self._fold(event, ((name, value),))
            case Metrics(values=values):
                return self._fold(event, values.items())
            case _:
                return [event]

    def expired(self) -> list[Event]:
        """Rows of time windows that heard nothing for a whole window's length. Windows are keyed
        by the events' own wall time and close when a later window's event arrives, so a busy
        origin gets exactly one row per window (replayed old events too); the clock only
        releases the last row of an origin that went quiet."""
        if not self._width:
            return []
        now = time.monotonic()
        done = [origin for origin, w in self._open.items() if now - w.arrived >= self._width]
        return [self._close(origin) for origin in done]

    def drain(self) -> list[Event]:
        """Every open row, for a flush or the close."""
        return [self._close(origin) for origin in list(self._open)]

    def clear(self) -> int:
        """Forget the open rows (the sink failed); returns how many."""
        n = len(self._open)
        self._open.clear()
        return n

    def _fold(self, event: Scalar | Metrics, values: Iterable[tuple[str, float]]) -> list[Event]:
        every, per_second = self.limit.every, self.limit.per_second
        key = float(event.step // every) if every else float(math.floor(event.wall_time * per_second))  # type: ignore[operator]
        origin = event.origin
        window = self._open.get(origin)
        out: list[Event] = []
        if window is not None and window.key != key:
            out.append(self._close(origin))
            window = None
        if window is None:
            window = self._open[origin] = _Window(key, time.monotonic(), event.step, event.wall_time, event.context)
        else:
            self.reduced += 1
            window.step, window.wall_time, window.context = event.step, event.wall_time, event.context
            window.arrived = time.monotonic()
        reduce = self.limit.reduce
        for name, value in values:
            if name not in window.values:
                window.values[name], window.counts[name] = value, 1
            elif reduce == "last":
                window.values[name] = value
            elif reduce == "mean":
                window.values[name] += value
                window.counts[name] += 1
            elif not math.isnan(value):  # min/max: NaN only when every value is NaN
                old = window.values[name]
                better = value < old if reduce == "min" else value > old
                if math.isnan(old) or better:
                    window.values[name] = value
        return out

    def _close(self, origin: Origin) -> Metrics:
        window = self._open.pop(origin)
        values = window.values
        if self.limit.reduce == "mean":
            values = {name: total / window.counts[name] for name, total in values.items()}
        return Metrics(values, window.step, wall_time=window.wall_time, origin=origin, context=window.context)
