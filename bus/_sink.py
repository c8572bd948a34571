"""The Sink protocol: what a destination implements to receive batches from the bus.

Batching, retries, backpressure and error isolation live once, on the bus side (`_route.py`); a
sink only writes. Subclass `Sink`, implement `write_batch`, and register it with `bus.add_sink`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar, Literal

from ._events import Event

__all__ = ["Sink"]


class Sink(ABC):
    """A destination for events. All four methods are called from the bus's event loop, one at a
    time per sink (never concurrently), so a sink needs no locking of its own.

    Blocking work (file I/O, encoding, SDK calls) must not run on the event loop: use
    `anyio.to_thread.run_sync`, aiofiles, or put the sink in a worker process.
    """

    #: Event types this sink wants; others are never routed to it (and never counted for it).
    #: None means every type.
    accepts: ClassVar[tuple[type[Event], ...] | None] = None

    #: Where the bus runs this sink unless `add_sink(isolate=...)` says otherwise. Heavy sinks
    #: (much Python per event) choose "process" so their work does not take the training
    #: process's GIL; such a sink must be picklable before `open`.
    isolation: ClassVar[Literal["none", "process"]] = "none"

    @property
    def name(self) -> str:
        """The default name of this sink on a bus (`add_sink(..., name=...)` overrides it)."""
        return type(self).__name__

    async def open(self) -> None:
        """Acquire resources (open files, start runs). Called once before the first batch."""

    @abstractmethod
    async def write_batch(self, events: Sequence[Event]) -> int | None:
        """Write a batch. Raising means the whole batch failed and will be retried as a whole.

        Return None, or the number of events of this batch the sink refused for good (they are
        counted as dropped with reason "rejected"; say why in a log message)."""

    async def flush(self) -> None:
        """Make everything written so far durable/visible (fsync-free; at least to the OS)."""

    async def close(self) -> None:
        """Flush and release resources. Called once, after the last batch."""
