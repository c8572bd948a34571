"""Per-sink rate control: fewer, reduced rows for a sink that wants them (W&B, any service).

A `RateLimit` on a route folds the Scalar and Metrics events of each origin into few Metrics rows
per window (`per_second` windows of wall time, or `every` steps), reducing each metric's values
in the window (`last`, `mean`, `min`, `max`), so a chart of a 1,000 steps/s loop still shows the
true curve while the other sinks get every step. Every event folded into a row is counted as
`reduced` in the sink's stats; other event kinds pass through untouched.

A value never moves to a step it was not logged at: each metric's reduction is placed at the last
step that metric was logged at in the window (a metric logged once keeps its own step: an eval
every 50 steps is not moved to the end of a window), so a window gives one row per such step,
usually one. A step lower than the window's last one closes the window: a new phase (validation
from step 0, a restart from a checkpoint) is never folded into the one before.
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
from ._flatten import metric_items

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
    """One origin's open window: its latest step, per metric the running reduction (mean keeps a
    sum and a count) and the step it was last logged at, and per step the wall time and context of
    its latest event (what that step's row carries)."""

    key: float
    arrived: float  # time.monotonic() when the window's latest event arrived
    step: int
    values: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    last: dict[str, int] = field(default_factory=dict)
    stamps: dict[int, tuple[float, Context | None]] = field(default_factory=dict)


class Reducer:
    """Folds a route's Scalar/Metrics events into few rows per (origin, window).

    Counted while a window is open as one row (`held`) and its other events as `reduced`; when it
    closes into k rows (one per step its metrics were last logged at), k-1 of those come back out
    of `reduced`, so published = delivered + reduced + queued holds at every moment.
    """

    def __init__(self, limit: RateLimit) -> None:
        self.limit = limit
        self.reduced = 0  # events folded into another event's row
        self._open: dict[Origin, _Window] = {}
        self._width = 1.0 / limit.per_second if limit.per_second is not None else 0.0
        self._every, self._per_second, self._reduce = limit.every, limit.per_second or 0.0, limit.reduce

    @property
    def held(self) -> int:
        """Open windows (each stands for the events folded into it)."""
        return len(self._open)

    def add(self, event: Event) -> list[Event]:
        """Take one event; returns what is ready for the sink: rows of windows it closed, or the
        event itself if it carries no metric values (another kind, an empty Metrics)."""
        return self.add_many((event,))

    def add_many(self, events: Iterable[Event]) -> list[Event]:
        """Take events in order; returns what is ready for the sink, in order. One clock read
        for the whole batch (the time its windows last heard from their origins)."""
        out: list[Event] = []
        now = time.monotonic()
        every, per_second, keep_last = self._every, self._per_second, self._reduce == "last"
        origin: Origin | None = None  # the origin of the last event folded, and its open window
        window: _Window | None = None
        for event in events:
            # The common case, inline: a Scalar of the same origin object (events of one batch
            # share it) into the window the last event went to.
            if type(event) is Scalar and event.origin is origin and window is not None:
                step = event.step
                key = float(step // every) if every else float(math.floor(event.wall_time * per_second))
                if key == window.key and step >= window.step:
                    self.reduced += 1
                    window.step, window.arrived = step, now
                    window.stamps[step] = (event.wall_time, event.context)
                    if keep_last:  # the default reduction, inline too (only a mean reads counts)
                        window.values[event.name] = event.value
                        window.last[event.name] = step
                    else:
                        self._merge(window, ((event.name, event.value),), step)
                    continue
            items = metric_items(event)
            if items:
                self._fold(event, items, now, out)
                origin = event.origin
                window = self._open.get(origin)
            else:
                out.append(event)
        return out

    def expired(self) -> list[Event]:
        """Rows of time windows that heard nothing for a whole window's length. Windows are keyed
        by the events' own wall time and close when a later window's event arrives, so a busy
        origin gets one row per window; the clock only releases the rows of an origin that went
        quiet. (Replay gives a rate-limited sink every step instead: the dense wall times of a
        recorded run say nothing about the pace a sink can take.)"""
        if not self._width:
            return []
        now = time.monotonic()
        done = [origin for origin, w in self._open.items() if now - w.arrived >= self._width]
        return [row for origin in done for row in self._close(origin)]

    def drain(self) -> list[Event]:
        """Every open row, for a flush or the close."""
        return [row for origin in list(self._open) for row in self._close(origin)]

    def _fold(self, event: Event, values: Iterable[tuple[str, float]], now: float, out: list[Event]) -> None:
        """Fold one event into its origin's window; rows of a window it closes go to `out`."""
        step, every = event.step, self._every
        key = float(step // every) if every else float(math.floor(event.wall_time * self._per_second))
        origin = event.origin
        window = self._open.get(origin)
        if window is not None and (window.key != key or step < window.step):
            out.extend(self._close(origin))
            window = None
        if window is None:
            window = self._open[origin] = _Window(key, now, step)
        else:
            self.reduced += 1
            window.step, window.arrived = step, now
        window.stamps[step] = (event.wall_time, event.context)
        self._merge(window, values, step)

    def _merge(self, window: _Window, values: Iterable[tuple[str, float]], step: int) -> None:
        """Reduce values logged at `step` into the window's running reductions."""
        reduce, last, reduced = self._reduce, window.last, window.values
        for name, value in values:
            if name not in last:
                reduced[name], window.counts[name] = value, 1
            elif reduce == "last":
                reduced[name] = value
            elif reduce == "mean":
                reduced[name] += value
                window.counts[name] += 1
            elif not math.isnan(value):  # min/max: NaN only when every value is NaN
                old = reduced[name]
                better = value < old if reduce == "min" else value > old
                if math.isnan(old) or better:
                    reduced[name] = value
            last[name] = step

    def _close(self, origin: Origin) -> list[Event]:
        """The window's rows: per step some metric was last logged at, those metrics' reductions,
        with the wall time and context of that step's latest event."""
        window = self._open.pop(origin)
        values = window.values
        if self.limit.reduce == "mean":
            values = {name: total / window.counts[name] for name, total in values.items()}
        by_step: dict[int, dict[str, float]] = {}
        for name, step in window.last.items():
            by_step.setdefault(step, {})[name] = values[name]
        self.reduced -= len(by_step) - 1
        rows: list[Event] = []
        for step in sorted(by_step):
            wall_time, context = window.stamps[step]
            rows.append(Metrics(by_step[step], step, wall_time=wall_time, origin=origin, context=context))
        return rows
