"""LocalBus: the part of a MetricLogger's pipeline that stays in the training process.

Sinks that cannot move to a sink host (a `MemorySink` the program reads, a callback into this
process, a class that cannot be imported by reference) and producer tasks (a system sampler, a
Redis source) run here, on one background thread with its own event loop and `MetricBus`. It is
fed the same encoded batches the hosts get (`post`), and decodes them on its own thread.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import anyio
from anyio.from_thread import BlockingPortal

from bus import DropReason, Event, MetricBus, SinkStats, wire

__all__ = ["LocalBus"]


class LocalBus:
    """A MetricBus on its own thread, fed encoded bodies."""

    def __init__(self, *, shutdown_timeout: float, poll_interval: float, backend_options: dict[str, Any]) -> None:
        self.bus = MetricBus(shutdown_timeout=shutdown_timeout, raise_on_loss=False)
        self.poll_interval = poll_interval
        self.inbox: deque[tuple[bytes, Sequence[Any]]] = deque()
        self._head: list[Event] = []  # the decoded batch being published
        self.error: BaseException | None = None
        self.final: Mapping[str, SinkStats] | None = None
        self._portal: BlockingPortal | None = None
        self._stop: anyio.Event | None = None
        self._wake: anyio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(
            target=anyio.run,
            args=(self._main,),
            kwargs={"backend": "asyncio", "backend_options": backend_options},
            name="metricbus local",
            daemon=True,  # the logger closes it; a daemon thread never blocks interpreter exit
        )
        self._thread.start()
        self._ready.wait()
        if self.error is not None:
            raise self.error

    # ---- from the training thread ----

    def post(self, body: bytes, items: Sequence[Any]) -> None:
        """Hand over one encoded batch, with its items (counted for the stats; never waits)."""
        self.inbox.append((body, items))

    @property
    def backlog(self) -> int:
        """Events posted and not yet on the bus."""
        return sum(len(items) for _, items in list(self.inbox)) + len(self._head)

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` (sync or async) on the loop's thread and return its result."""
        portal = self._portal
        if portal is None:
            raise RuntimeError("the local bus has stopped")
        return portal.call(fn)

    def add_producer(self, fn: Callable[[Any], Awaitable[None]], facade: Any) -> None:
        """Run `fn(facade)` on this loop until close."""
        self.call(lambda: self.bus.add_producer(lambda _bus: fn(facade)))

    def flush(self, timeout: float | None) -> None:
        async def flush() -> None:
            with anyio.fail_after(timeout):
                await self._drain()
                await self.bus.flush()

        self.call(flush)

    def stats(self) -> dict[str, SinkStats]:
        """The sinks' counters, with the bodies not yet decoded counted as queued."""
        if self.final is not None:
            return dict(self.final)
        return dict(self.bus.stats(held=self._held()))

    def close(self, timeout: float) -> Mapping[str, SinkStats]:
        """Deliver the inbox and close the sinks, within `timeout` seconds."""
        portal = self._portal
        if portal is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                portal.call(self._request_stop)
        self._thread.join(timeout + 2.0)
        if self.final is None:  # only if the loop itself is stuck: never a sink's doing
            self.final = self.bus.stats()
        return self.final

    # ---- the loop's thread ----

    async def _main(self) -> None:
        self._stop = anyio.Event()
        bus = self.bus
        try:
            async with BlockingPortal() as portal:
                await bus.__aenter__()
                self._portal = portal
                self._ready.set()
                try:
                    while not self._stop.is_set():
                        with anyio.move_on_after(self.poll_interval):
                            await self._stop.wait()
                        await self._drain()
                finally:
                    self._portal = None
                    await self._shut_down()
                    await portal.stop(cancel_remaining=True)
        except BaseException as exc:  # surfaced by the logger's close()
            self.error = exc
        finally:
            self.final = bus.stats()
            self._ready.set()

    def _request_stop(self) -> None:
        assert self._stop is not None
        self._stop.set()

    async def _drain(self) -> None:
        """Publish every posted body, in chunks that fit, waiting for room as the sinks'
        policies say: a deadline can stop it between chunks without losing count of an event."""
        bus = self.bus
        while self._head or self.inbox:
            if not self._head:
                self._head = wire.decode(self.inbox.popleft()[0])
            room = bus.room()
            if room == 0:
                await bus.wait_for_room()
                continue
            chunk = self._head[:room]
            del self._head[:room]
            bus.publish_many_nowait(chunk)
            await anyio.lowlevel.checkpoint()

    def _held(self) -> dict[type[Event], int]:
        """Events posted and not yet on the bus, by kind."""
        return wire.item_kinds([*(item for _, items in list(self.inbox) for item in items), *self._head])

    async def _shut_down(self) -> None:
        bus = self.bus
        deadline = anyio.current_time() + bus.shutdown_timeout
        with anyio.move_on_after(bus.shutdown_timeout):
            await self._drain()
        held = self._held()
        if held:
            bus.count_lost(held, DropReason.SHUTDOWN_TIMEOUT)
            self.inbox.clear()
            self._head = []
        await bus.aclose(timeout=max(0.0, deadline - anyio.current_time()))
