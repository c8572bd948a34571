"""LinkFeed: the async bus's side of one sink host.

A `MetricBus` runs a sink that moves (`isolate="host"` or `"process"`) in a sink host process.
Every event for the sinks of one host is appended here once, whichever of them take it, and a
task ships the batch every `interval` (or at `max_batch`): one msgspec encode for all of them,
one non-blocking write. The host's routes apply each sink's own policy; this feed only holds
`capacity` events (publishers wait for room, as for a `block` sink) while the host is behind.
"""

from __future__ import annotations

from collections.abc import Sequence

import anyio

from .. import wire
from .._events import Event
from ._link import HostLink

__all__ = ["LinkFeed"]


class LinkFeed:
    def __init__(
        self, link: HostLink, *, capacity: int = 10_000, max_batch: int = 1_000, interval: float = 0.01
    ) -> None:
        self.link = link
        self.capacity = capacity
        self.max_batch = max_batch
        self.interval = interval
        self.accepts: frozenset[type[Event]] | None = frozenset()  # the union of its sinks'
        self.pending: list[Event] = []
        self._wake = anyio.Event()
        self._space: anyio.Event | None = None

    def take(self, accepts: frozenset[type[Event]] | None) -> None:
        """A sink that takes `accepts` (None: everything) now runs on this host."""
        self.accepts = None if accepts is None or self.accepts is None else self.accepts | accepts

    def room(self) -> int:
        return max(0, self.capacity - len(self.pending) - self.link.backlog_events)

    async def wait_for_room(self) -> None:
        if self._space is None:
            self._space = anyio.Event()
        self._wake.set()
        await self._space.wait()

    def offer(self, event: Event) -> None:
        self.pending.append(event)
        if len(self.pending) >= self.max_batch:
            self._wake.set()

    def offer_many(self, events: Sequence[Event]) -> None:
        self.pending.extend(events)
        if len(self.pending) >= self.max_batch:
            self._wake.set()

    def ship(self) -> None:
        """Send what is pending, now."""
        if self.pending:
            events, self.pending = self.pending, []
            self.link.send_batch(wire.encode_events(events), events)
        if self._space is not None and self.room():
            self._space.set()
            self._space = None

    async def run(self) -> None:
        """Ship every `interval`, or as soon as `max_batch` events wait; until cancelled."""
        while True:
            with anyio.move_on_after(self.interval):
                await self._wake.wait()
            self._wake = anyio.Event()
            self.ship()

    def held(self) -> dict[type[Event], int]:
        """Events not yet shipped, by kind."""
        return wire.item_kinds(self.pending)
