"""Every exception metricbus raises on purpose.

MetricBusError
├── InvalidEvent        a value, name or step that cannot become an event (also ValueError)
├── InvalidConfig       a sink option or bus option that makes no sense (also ValueError)
├── BusStateError       the bus is used outside its lifecycle
│   ├── BusClosed       publish/add_sink after close
│   └── SinkAlreadyAdded the same sink object or name twice
├── BusFull             a `block` sink has no room and the caller may not wait
├── DeliveryError       raised at close: some sink failed or lost events (carries the stats)
├── StopTraining        a guard asks the training loop to stop (raised at a logging call)
└── InvalidSinkResult   a sink's write_batch returned something other than None or a count

Sink failures (InvalidSinkResult, a sink's own exceptions) never reach the caller of `publish`:
they are counted in the sink's stats and summed up by DeliveryError.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._stats import SinkStats

__all__ = [
    "BusClosed",
    "BusFull",
    "BusStateError",
    "DeliveryError",
    "InvalidConfig",
    "InvalidEvent",
    "InvalidSinkResult",
    "MetricBusError",
    "SinkAlreadyAdded",
    "StopTraining",
]


class MetricBusError(Exception):
    """Base class of every error metricbus raises on purpose."""


class InvalidEvent(MetricBusError, ValueError):
    """A field of an event has a value that cannot be logged; the message names the field."""

    def __init__(self, field: str, value: object, reason: str) -> None:
        try:
            shown = repr(value)
        except Exception:  # an int too long to print, a broken __repr__
            shown = f"<{type(value).__name__}>"
        if len(shown) > 80:
            shown = shown[:77] + "..."
        super().__init__(f"{field}={shown}: {reason}")
        self.field = field
        self.value = value
        self.reason = reason


class InvalidConfig(MetricBusError, ValueError):
    """A bus or sink option is out of range or of the wrong kind."""


class BusStateError(MetricBusError, RuntimeError):
    """The bus was used outside its lifecycle (unopened, open, closing, closed)."""


class BusClosed(BusStateError):
    """The bus is closing or closed: nothing more can be published or added."""


class SinkAlreadyAdded(BusStateError):
    """The same sink object, or another sink under the same name, is already on this bus."""


class BusFull(MetricBusError):
    """A sink with `when_full="block"` has no room and the caller may not wait (or waited too long).

    Nothing was delivered to any sink when this is raised.
    """


class DeliveryError(MetricBusError):
    """Raised when the bus closes if some sink failed or events were dropped for a reason other
    than a chosen drop policy. `stats` holds the final per-sink record."""

    def __init__(self, message: str, stats: Mapping[str, SinkStats]) -> None:
        super().__init__(message)
        self.stats = stats


class StopTraining(MetricBusError):
    """A guard (for example the NaN guard) asks the training loop to stop."""


class InvalidSinkResult(MetricBusError, TypeError):
    """A sink's `write_batch` returned something other than None or a count of refused events."""
