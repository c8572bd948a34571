"""MemorySink: keeps every event in a list. The test double for users' tests and ours."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal

from bus import Event, Sink, metric_items

__all__ = ["MemorySink"]


class MemorySink(Sink):
    """Collects events in `events`, in arrival order; `values(name)` gives a scalar series."""

    isolation: ClassVar[Literal["none", "host", "process"]] = "none"  # its events are read by this program

    blocking = False  # only appends to a list: served on the bus's loop, no thread hop

    def __init__(self, name: str = "memory") -> None:
        self._name = name
        self.events: list[Event] = []
        self.batches: list[int] = []  # size of each batch, to check batching
        self.flushes = 0
        self.opened = False
        self.closed = False

    @property
    def name(self) -> str:
        return self._name

    async def open(self) -> None:
        self.opened = True

    async def write_batch(self, events: Sequence[Event]) -> None:
        self.events.extend(events)
        self.batches.append(len(events))

    async def flush(self) -> None:
        self.flushes += 1

    async def close(self) -> None:
        self.closed = True

    def values(self, name: str) -> list[tuple[int, float]]:
        """(step, value) for every Scalar named `name` and every Metrics entry with that key."""
        return [(event.step, value) for event in self.events for key, value in metric_items(event) if key == name]
