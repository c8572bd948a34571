"""NanGuard: stop training when a watched metric becomes NaN or infinite.

It is a sink, so it inspects events on the bus's thread and costs the training thread nothing.
When it trips it calls `on_trigger(reason)` once. With a MetricLogger pass
`on_trigger=log.request_stop` (or use `NanGuard.attach(log)`) and the next logging call raises
`bus.StopTraining`; pass any other callable to decide for yourself. The event that tripped it
still reaches every other sink: the guard only reads.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, ClassVar, Literal

from bus import Event, Metrics, Scalar, Sink, metric_items

if TYPE_CHECKING:
    from ._logger import MetricLogger

__all__ = ["NanGuard"]

log = logging.getLogger("metricbus")


class NanGuard(Sink):
    """Calls `on_trigger(reason)` once, for the first watched value that is NaN or ±inf.

    watch: metric names to check (None: every value of every Scalar and Metrics event).
    `tripped` holds the reason once `on_trigger` has returned (None until then).
    """

    accepts = (Scalar, Metrics)
    isolation: ClassVar[Literal["none", "host", "process"]] = "none"  # it calls back into this process

    def __init__(self, on_trigger: Callable[[str], object], *, watch: Iterable[str] | None = None) -> None:
        self.on_trigger = on_trigger
        self.watch = None if watch is None else frozenset(watch)
        self.tripped: str | None = None

    @classmethod
    def attach(cls, logger: MetricLogger, *, watch: Iterable[str] | None = None) -> NanGuard:
        """Add a guard to `logger` that makes its next logging call raise StopTraining."""
        guard = cls(logger.request_stop, watch=watch)
        # Small batches, written at once: the guard should react within a poll, not a second.
        # drop_oldest: a guard must never hold the loop back; its drops are counted, not raised.
        logger.add_sink(guard, name="nan-guard", when_full="drop_oldest", max_batch=100, max_interval=0.005)
        return guard

    @property
    def name(self) -> str:
        return "nan-guard"

    async def write_batch(self, events: Sequence[Event]) -> None:
        if self.tripped is not None:
            return
        for event in events:
            reason = self._check(event)
            if reason is not None:
                log.error("NanGuard: %s", reason)
                try:
                    self.on_trigger(reason)
                finally:
                    # Set after the callback: whoever sees `tripped` also sees its effect (a stop
                    # request); set even if it raised, so a retried batch does not trigger twice.
                    self.tripped = reason
                return

    def _check(self, event: Event) -> str | None:
        """The reason to stop, if a watched value of `event` is not finite."""
        watch = self.watch
        for name, value in metric_items(event):
            if not math.isfinite(value) and (watch is None or name in watch):
                return f"{name} became {value} at step {event.step}"
        return None
