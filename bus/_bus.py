"""MetricBus: fan-out of typed events to sinks, each with its own buffer, batching and policy."""

from __future__ import annotations

import logging
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from enum import Enum
from types import TracebackType
from typing import Literal

import anyio
import msgspec
from anyio.abc import TaskGroup

from ._config import RetryPolicy, SinkConfig, WhenFull
from ._errors import BusClosed, BusFull, BusStateError, DeliveryError, InvalidConfig, InvalidEvent, SinkAlreadyAdded
from ._events import EVENT_TYPES, Event
from ._rate import RateLimit
from ._route import Route
from ._sink import Sink
from ._stats import DropReason, SinkState, SinkStats

__all__ = ["MetricBus"]

log = logging.getLogger("metricbus")

_EVENT_TYPES = frozenset(EVENT_TYPES)


class BusState(str, Enum):
    UNOPENED = "unopened"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class MetricBus:
    """An in-process bus: `async with MetricBus() as bus`, add sinks, publish events.

    Each sink gets its own bounded buffer and task, so a slow or failing sink never holds up
    another. Leaving the context drains every buffer within `shutdown_timeout` seconds and closes
    every sink; if a sink failed or lost events, a `DeliveryError` is raised then (unless
    `raise_on_loss=False`, or the body is already raising).
    """

    def __init__(
        self,
        sinks: Iterable[Sink] = (),
        *,
        shutdown_timeout: float = 10.0,
        raise_on_loss: bool = True,
    ) -> None:
        if not shutdown_timeout > 0:
            raise InvalidConfig(f"shutdown_timeout must be > 0, got {shutdown_timeout!r}")
        self.shutdown_timeout = shutdown_timeout
        self.raise_on_loss = raise_on_loss
        self._state = BusState.UNOPENED
        self._routes: list[Route] = []
        self._blocking: list[Route] = []
        self._task_group: TaskGroup | None = None
        self._publishes_since_yield = 0
        self._producers: list[tuple[Callable[[MetricBus], Awaitable[None]], anyio.CancelScope]] = []
        for sink in sinks:
            self.add_sink(sink)

    # ---- lifecycle ----

    async def __aenter__(self) -> MetricBus:
        if self._state is not BusState.UNOPENED:
            raise BusStateError(f"a MetricBus can be opened once; this one is {self._state.value}")
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        self._state = BusState.OPEN
        for route in self._routes:
            self._task_group.start_soon(route.run, name=f"metricbus sink {route.name}")
        for fn, scope in self._producers:
            self._task_group.start_soon(self._run_producer, fn, scope)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        await self.aclose(raise_on_loss=exc_type is None and self.raise_on_loss)
        return None

    async def aclose(self, *, timeout: float | None = None, raise_on_loss: bool = False) -> None:  # noqa: ASYNC109 - a deadline for the drain, not for the caller
        """Stop the producers, drain every sink within `timeout` seconds (default:
        `shutdown_timeout`) and close them; a sink still busy then is abandoned, failed, and what
        it missed is counted. `async with` calls this for you."""
        assert self._task_group is not None
        timeout = self.shutdown_timeout if timeout is None else timeout
        self._state = BusState.CLOSING
        for _, scope in self._producers:
            scope.cancel()
        for route in self._routes:
            route.request_close()
        with anyio.move_on_after(timeout, shield=True):
            for route in self._routes:
                await route.done.wait()
        for route in self._routes:
            if not route.done.is_set():
                log.error("sink %r did not finish within the shutdown timeout (%ss)", route.name, self.shutdown_timeout)
                route.abandon(self.shutdown_timeout)
        # Only abandoned sinks are still running, and they only await their threads' futures,
        # which a cancel ends at once: a hung sink is left behind on its own thread.
        self._task_group.cancel_scope.cancel()
        await self._task_group.__aexit__(None, None, None)
        self._state = BusState.CLOSED
        for route in self._routes:
            _release(route.given, self)
        if raise_on_loss:
            self.check_delivery()

    def check_delivery(self) -> None:
        """Raise `DeliveryError` if some sink failed or lost events other than by its drop policy."""
        stats = self.stats()
        bad = [
            s
            for s in stats.values()
            if s.state is SinkState.FAILED or any(reason != DropReason.FULL.value for reason in s.dropped)
        ]
        if bad:
            lines = [
                f"{s.name}: {s.state.value}, dropped {s.dropped}, last error: {s.last_error}{_saved(s)}" for s in bad
            ]
            raise DeliveryError("some sinks did not receive every event:\n  " + "\n  ".join(lines), stats)

    # ---- sinks ----

    def add_sink(
        self,
        sink: Sink,
        *,
        name: str | None = None,
        capacity: int = 10_000,
        max_batch: int = 1_000,
        max_interval: float = 1.0,
        when_full: WhenFull = "block",
        retry: RetryPolicy | None = None,
        call_timeout: float = 120.0,
        rate: RateLimit | Literal["none"] | None = None,
        spool_dir: str | None = None,
        config: SinkConfig | None = None,
        isolate: Literal["none", "process"] | None = None,
    ) -> str:
        """Attach a sink; returns its name on this bus (the key in `stats()`).

        Pass either the individual settings or a ready `SinkConfig`. `isolate="process"` runs the
        sink in a worker process (see `ProcessSink`); the default is the sink's own `isolation`.
        `rate` (a `RateLimit`) gives this sink fewer, reduced rows; the default is the sink's own
        `rate`, and "none" turns that off.
        Sinks added while the bus is open start receiving events published from then on.
        """
        if self._state in (BusState.CLOSING, BusState.CLOSED):
            raise BusClosed("cannot add a sink to a closing or closed bus")
        if not isinstance(sink, Sink):
            raise InvalidConfig(f"expected a Sink, got {type(sink).__name__}")
        if config is None:
            config = SinkConfig(
                capacity=capacity,
                max_batch=max_batch,
                max_interval=max_interval,
                when_full=when_full,
                retry=retry if retry is not None else RetryPolicy(),
                call_timeout=call_timeout,
                rate=sink.rate if rate is None else None if rate == "none" else rate,
                spool_dir=None if spool_dir is None else str(spool_dir),
            )
        name = name if name is not None else sink.name
        for route in self._routes:
            if route.given is sink:
                raise SinkAlreadyAdded(f"this {type(sink).__name__} is already on the bus as {route.name!r}")
            if route.name == name:
                raise SinkAlreadyAdded(f"a sink named {name!r} is already on the bus; pass name=... to add_sink")
        isolate = isolate if isolate is not None else sink.isolation
        if isolate not in ("none", "process"):
            raise InvalidConfig(f"isolate must be 'none' or 'process', got {isolate!r}")
        _claim(sink, self)
        route = Route(name, sink, config, isolate=isolate)
        self._routes.append(route)
        if route.blocks:
            self._blocking.append(route)
        if self._task_group is not None and self._state is BusState.OPEN:
            self._task_group.start_soon(route.run, name=f"metricbus sink {name}")
        return name

    def add_producer(self, fn: Callable[[MetricBus], Awaitable[None]]) -> None:
        """Run `fn(bus)` as a task on the bus (a sampler, a bridge); it is cancelled when the bus
        starts closing, before the sinks drain. An exception in it is logged, never raised."""
        if self._state in (BusState.CLOSING, BusState.CLOSED):
            raise BusClosed("cannot add a producer to a closing or closed bus")
        entry = (fn, anyio.CancelScope())
        self._producers.append(entry)
        if self._task_group is not None and self._state is BusState.OPEN:
            self._task_group.start_soon(self._run_producer, *entry)

    async def _run_producer(self, fn: Callable[[MetricBus], Awaitable[None]], scope: anyio.CancelScope) -> None:
        with scope:
            try:
                await fn(self)
            except BusClosed:
                pass
            except Exception:  # a producer's bug must not take the sinks down with it
                log.exception("metricbus producer %r failed", fn)

    @property
    def sink_names(self) -> list[str]:
        return [route.name for route in self._routes]

    # ---- publishing ----

    async def publish(self, event: Event) -> None:
        """Deliver one event to every sink, waiting while a `block` sink is full (backpressure)."""
        if self._state is not BusState.OPEN or type(event) not in _EVENT_TYPES:
            self._check_publishable((event,))
        while (full := self._first_full()) is not None:
            await full.wait_for_room()
            self._check_open()
        self._deliver(event)
        self._publishes_since_yield += 1
        if self._publishes_since_yield >= 256:
            # A producer that never awaits anything else would starve the sink tasks.
            self._publishes_since_yield = 0
            await anyio.lowlevel.checkpoint()

    def publish_nowait(self, event: Event) -> None:
        """Deliver one event without waiting. Raises `BusFull` (and delivers nowhere) if a `block`
        sink has no room; drop-policy sinks apply their policy."""
        if self._state is not BusState.OPEN or type(event) not in _EVENT_TYPES:
            self._check_publishable((event,))
        full = self._first_full()
        if full is not None:
            raise BusFull(f"sink {full.name!r} is full ({full.capacity} events) and its policy is 'block'")
        self._deliver(event)

    async def publish_many(self, events: Sequence[Event]) -> None:
        """Deliver a batch in order, waiting for room in `block` sinks as needed. The cheapest way
        to move many events: per-event cost is a list slice and a deque extend."""
        self._check_publishable(events)
        start, total = 0, len(events)
        while start < total:
            room = self.room()
            if room == 0:
                await self.wait_for_room()
                self._check_open()
                continue
            chunk = events if start == 0 and room >= total else events[start : start + room]
            self._deliver_many(chunk)
            start += len(chunk)
        await anyio.lowlevel.checkpoint()

    def _deliver_many(self, events: Sequence[Event]) -> None:
        for route in self._routes:
            route.offer_many(_accepted(events, route))

    def _deliver(self, event: Event) -> None:
        kind = type(event)
        for route in self._routes:
            if route.accepts is None or kind in route.accepts:
                route.offer(event)

    def _first_full(self) -> Route | None:
        for route in self._blocking:
            if len(route.buf) >= route.capacity and route.accepting:
                return route
        return None

    def _check_open(self) -> None:
        if self._state is not BusState.OPEN:
            if self._state is BusState.UNOPENED:
                raise BusStateError("the bus is not open yet: use `async with MetricBus() as bus`")
            raise BusClosed(f"the bus is {self._state.value}; nothing more can be published")

    def _check_publishable(self, events: Sequence[Event]) -> None:
        self._check_open()
        for event in events:
            if type(event) not in _EVENT_TYPES:
                raise InvalidEvent("event", event, f"must be one of {', '.join(t.__name__ for t in EVENT_TYPES)}")

    # ---- flushing and stats ----

    async def flush(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 - the logger's sync flush passes it on
        """Return once every event published before this call is written and every sink flushed
        (or the sink has failed, in which case the stats say what it dropped). Raises
        `TimeoutError` after `timeout` seconds; a sink that hangs is failed at its `call_timeout`."""
        self._check_open()
        waiters = [route.request_flush() for route in self._routes]
        with anyio.fail_after(timeout):
            for waiter in waiters:
                await waiter.wait()

    # ---- for bridges that hold events before the bus (the sync logger) ----

    def room(self) -> int:
        """How many events can be published now without waiting (the smallest room of the
        `block` sinks; drop-policy sinks always have room)."""
        return min((route.room() for route in self._blocking), default=1 << 62)

    async def wait_for_room(self) -> None:
        """Wait until some `block` sink that was full has room again."""
        full = self._first_full()
        if full is not None:
            await full.wait_for_room()

    def publish_many_nowait(self, events: Sequence[Event]) -> None:
        """Deliver a batch that fits (`len(events) <= room()`) without waiting."""
        self._check_publishable(events)
        self._deliver_many(events)

    def count_lost(self, kinds: Mapping[type[Event], int], reason: DropReason) -> None:
        """Count events that were published to this bus's producer but never reached it, by
        kind, in every sink that would have taken them, so the sinks' counters still balance."""
        for route in self._routes:
            n = route.share(kinds)
            if n:
                route.count_lost(n, reason)

    def stats(self, *, held: Mapping[type[Event], int] | None = None) -> Mapping[str, SinkStats]:
        """A snapshot of every sink's counters, keyed by sink name. `held`: events, by kind, that
        a producer holds for the bus (the sync logger's backlog), shown as published and queued."""
        stats = {route.name: route.stats() for route in self._routes}
        if held:
            for route in self._routes:
                n = route.share(held)
                if n:
                    s = stats[route.name]
                    stats[route.name] = msgspec.structs.replace(s, published=s.published + n, queued=s.queued + n)
        return stats


def _saved(stats: SinkStats) -> str:
    if stats.saved_to is None:
        return ""
    return f"; what it missed is saved in {stats.saved_to} (metricbus replay {stats.saved_to} --to ...)"


def _accepted(events: Sequence[Event], route: Route) -> Sequence[Event]:
    accepts = route.accepts
    if accepts is None:
        return events
    return [event for event in events if type(event) in accepts]


# Which open bus holds each sink object, so that one sink on two buses (two loggers) is refused:
# it would get every event twice, interleaved from two threads.
_owners: dict[int, weakref.ref[MetricBus]] = {}


def _claim(sink: Sink, bus: MetricBus) -> None:
    ref = _owners.get(id(sink))
    other = ref() if ref is not None else None
    held = other is not None and other is not bus and other._state is not BusState.CLOSED
    if held and any(route.given is sink for route in other._routes):  # type: ignore[union-attr]
        raise SinkAlreadyAdded(
            f"this {type(sink).__name__} is already on another open bus (another MetricLogger?); "
            "a sink object can feed one bus at a time"
        )
    _owners[id(sink)] = weakref.ref(bus)


def _release(sink: Sink, bus: MetricBus) -> None:
    ref = _owners.get(id(sink))
    if ref is not None and ref() in (bus, None):
        del _owners[id(sink)]
