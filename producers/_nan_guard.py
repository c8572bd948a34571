"""NanGuard: stop training when a watched metric becomes NaN or infinite.

It is a sink, so it inspects events on the bus's thread and costs the training thread nothing.
When it trips it calls `on_trigger(reason)`, by default nothing else; with a MetricLogger pass
`on_trigger=log.request_stop` (or use `NanGuard.attach(log)`) and the next logging call raises
`StopTraining`. The event that tripped it still reaches every other sink.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, ClassVar, Literal

from bus import Event, Metrics, Scalar, Sink

if TYPE_CHECKING:
    from ._logger import MetricLogger

__all__ = ["NanGuard"]

log = logging.getLogger("metricbus")


class NanGuard(Sink):
    """Calls `on_trigger(reason)` once, for the first watched value that is NaN or ±inf.

    watch: metric names to check (None: every Scalar and Metrics value).
    """

    accepts = (Scalar, Metrics)
    isolation: ClassVar[Literal["none", "process"]] = "none"  # it calls back into this process

    def __init__(self, on_trigger: Callable[[str], object], *, watch: Iterable[str] | None = None) -> None:
        self.on_trigger = on_trigger
        self.watch = None if watch is None else frozenset(watch)
        self.tripped: str | None = None

    @classmethod
    def attach(cls, logger: MetricLogger, *, watch: Iterable[str] | None = None) -> NanGuard:
        """Add a guard to `logger` that makes its next logging call raise StopTraining."""
        guard = cls(logger.request_stop, watch=watch)
        # small batches, written at once: the guard should react within a poll, not a second
        logger.add_sink(guard, name="nan-guard", when_full="drop_oldest", max_batch=100, max_interval=0.005)
        return guard

    @property
    def name(self) -> str:
        return "nan-guard"

    async def write_batch(self, events: Sequence[Event]) -> None:
        if self.tripped is not None:
            return
        for event in events:
            pairs = ((event.name, event.value),) if isinstance(event, Scalar) else event.values.items()  # type: ignore[union-attr]
            for name, value in pairs:
                if (self.watch is None or name in self.watch) and not math.isfinite(value):
                    self.tripped = f"{name} became {value} at step {event.step}"
                    log.error("NanGuard: %s", self.tripped)
                    self.on_trigger(self.tripped)
                    return
