"""MetricBus: fan-out of typed events to sinks, each with its own buffer, batching and policy."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from enum import Enum
from types import TracebackType
from typing import Literal

import anyio
import msgspec
from anyio.abc import TaskGroup

from ._claims import claim_sink, release_sink
from ._config import RetryPolicy, SinkConfig, WhenFull, sink_config
from ._delivery import check_delivery
from ._errors import BusClosed, BusFull, BusStateError, InvalidConfig, InvalidEvent, SinkAlreadyAdded
from ._events import EVENT_TYPES, Event
from ._rate import RateLimit
from ._route import Route
from ._sink import Sink
from ._stats import DropReason, SinkStats, accepted_share
from .hosts._feed import LinkFeed
from .hosts._link import HostLink
from .hosts._placement import Placement, place
from .hosts._pump import Pump

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
    `raise_on_loss=False`, or the body is already raising). The files its sinks write are locked
    for this process from `add_sink` to close (`Sink.exclusive_paths`); `lock_files=False` is for
    a bus whose sinks' files another process already holds (a sink host runs its trainer's sinks).
    """

    def __init__(
        self,
        sinks: Iterable[Sink] = (),
        *,
        shutdown_timeout: float = 10.0,
        raise_on_loss: bool = True,
        lock_files: bool = True,
    ) -> None:
        if not shutdown_timeout > 0:
            raise InvalidConfig(f"shutdown_timeout must be > 0, got {shutdown_timeout!r}")
        self.shutdown_timeout = shutdown_timeout
        self.raise_on_loss = raise_on_loss
        self._lock_files = lock_files  # False: another process holds its sinks' file locks (a sink host's trainer)
        self._state = BusState.UNOPENED
        self._routes: list[Route] = []
        self._blocking: list[Route | LinkFeed] = []  # what publishers wait for when it is full
        self._feeds: dict[str, LinkFeed] = {}  # one per sink host: "" the shared one, else a sink's own
        self._hosted: dict[str, tuple[LinkFeed, frozenset[type[Event]] | None]] = {}  # sink name -> its host
        self._hosted_sinks: list[Sink] = []
        self._pump: Pump | None = None
        self._task_group: TaskGroup | None = None
        self._publishes_since_yield = 0
        self._producers: list[Callable[[MetricBus], Awaitable[None]]] = []
        self._producer_scopes: list[anyio.CancelScope] = []  # made when each starts: on the loop
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
        for feed in self._feeds.values():
            self._task_group.start_soon(feed.run, name=f"metricbus host {feed.link.label}")
        for fn in self._producers:
            self._task_group.start_soon(self._run_producer, fn)
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
        for scope in self._producer_scopes:
            scope.cancel()
        deadline = anyio.current_time() + timeout
        for route in self._routes:
            route.request_close()
        for feed in self._feeds.values():
            feed.ship()
            feed.link.begin_close()
        with anyio.move_on_after(timeout, shield=True):
            for route in self._routes:
                await route.done.wait()
        for route in self._routes:
            if not route.done.is_set():
                log.error("sink %r did not finish within the shutdown timeout (%ss)", route.name, self.shutdown_timeout)
                await route.abandon(self.shutdown_timeout)
        for feed in self._feeds.values():  # the hosts closed meanwhile; each waits its own deadline
            left = max(0.0, deadline - anyio.current_time())
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(feed.link.finish_close, left)
        if self._pump is not None:
            self._pump.stop()
        # Only abandoned sinks are still running, and they only await their threads' futures,
        # which a cancel ends at once: a hung sink is left behind on its own thread.
        self._task_group.cancel_scope.cancel()
        await self._task_group.__aexit__(None, None, None)
        self._state = BusState.CLOSED
        for sink in [route.given for route in self._routes] + self._hosted_sinks:
            release_sink(sink, self)
        if raise_on_loss:
            self.check_delivery()

    def check_delivery(self) -> None:
        """Raise `DeliveryError` if some sink failed or lost events other than by its drop policy."""
        check_delivery(self.stats())

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
        isolate: Placement | None = None,
    ) -> str:
        """Attach a sink; returns its name on this bus (the key in `stats()`).

        Pass either the individual settings or a ready `SinkConfig`. `isolate`: where the sink
        runs: "none" (in this process, on its own thread), "host" (the bus's shared sink host
        process) or "process" (a sink host of its own). By default a sink whose `isolation` is
        "process" (W&B, MLflow) gets a host of its own and every other sink runs in this process:
        the async bus keeps its sinks in-process unless asked (the sync `MetricLogger` moves them).
        `rate` (a `RateLimit`) gives this sink fewer, reduced rows; the default is the sink's own
        `rate`, and "none" turns that off.
        Sinks added while the bus is open start receiving events published from then on.
        """
        if self._state in (BusState.CLOSING, BusState.CLOSED):
            raise BusClosed("cannot add a sink to a closing or closed bus")
        if not isinstance(sink, Sink):
            raise InvalidConfig(f"expected a Sink, got {type(sink).__name__}")
        config = sink_config(
            sink.rate,
            capacity=capacity,
            max_batch=max_batch,
            max_interval=max_interval,
            when_full=when_full,
            retry=retry,
            call_timeout=call_timeout,
            rate=rate,
            spool_dir=spool_dir,
            config=config,
        )
        name = name if name is not None else sink.name
        for route in self._routes:
            if route.given is sink:
                raise SinkAlreadyAdded(f"this {type(sink).__name__} is already on the bus as {route.name!r}")
        if name in self.sink_names:
            raise SinkAlreadyAdded(f"a sink named {name!r} is already on the bus; pass name=... to add_sink")
        where, _ = place(sink, isolate, default="process" if sink.isolation == "process" else "none")
        claim_sink(sink, self, lock_files=self._lock_files)
        if where != "none":
            self._add_hosted(name, sink, config, where)
            return name
        route = Route(name, sink, config)
        self._routes.append(route)
        if route.blocks:
            self._blocking.append(route)
        if self._task_group is not None and self._state is BusState.OPEN:
            self._task_group.start_soon(route.run, name=f"metricbus sink {name}")
        return name

    def _add_hosted(self, name: str, sink: Sink, config: SinkConfig, where: Placement) -> None:
        """Run `sink` in a sink host: the shared one ("host") or its own ("process")."""
        key = "" if where == "host" else name
        feed = self._feeds.get(key)
        if feed is None:
            if self._pump is None:
                self._pump = Pump(0.01, name="metricbus pump (bus)")
            link = HostLink("shared" if key == "" else "own", self._pump, shutdown_timeout=self.shutdown_timeout)
            feed = self._feeds[key] = LinkFeed(link)
            self._blocking.append(feed)
            if self._task_group is not None and self._state is BusState.OPEN:
                self._task_group.start_soon(feed.run, name=f"metricbus host {link.label}")
        feed.ship()  # what was published before it is not its to get
        feed.link.add_sink(name, sink, config)
        accepts = None if sink.accepts is None else frozenset(sink.accepts)
        feed.take(accepts)
        self._hosted[name] = (feed, accepts)
        self._hosted_sinks.append(sink)

    def add_producer(self, fn: Callable[[MetricBus], Awaitable[None]]) -> None:
        """Run `fn(bus)` as a task on the bus (a sampler, a bridge); it is cancelled when the bus
        starts closing, before the sinks drain. An exception in it is logged, never raised."""
        if self._state in (BusState.CLOSING, BusState.CLOSED):
            raise BusClosed("cannot add a producer to a closing or closed bus")
        self._producers.append(fn)
        if self._task_group is not None and self._state is BusState.OPEN:
            self._task_group.start_soon(self._run_producer, fn)

    async def _run_producer(self, fn: Callable[[MetricBus], Awaitable[None]]) -> None:
        if self._state is not BusState.OPEN:
            return  # the bus started closing before this producer got to run
        with anyio.CancelScope() as scope:
            self._producer_scopes.append(scope)
            try:
                await fn(self)
            except BusClosed:
                pass
            except Exception:  # a producer's bug must not take the sinks down with it
                log.exception("metricbus producer %r failed", fn)

    @property
    def sink_names(self) -> list[str]:
        return [route.name for route in self._routes] + list(self._hosted)

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
            what = f"sink {full.name!r}" if isinstance(full, Route) else f"the sink host {full.link.label!r}"
            raise BusFull(f"{what} is full ({full.capacity} events) and its policy is 'block'")
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
        for feed in self._feeds.values():
            feed.offer_many(_accepted(events, feed))

    def _deliver(self, event: Event) -> None:
        kind = type(event)
        for route in self._routes:
            if route.accepts is None or kind in route.accepts:
                route.offer(event)
        for feed in self._feeds.values():
            if feed.accepts is None or kind in feed.accepts:
                feed.offer(event)

    def _first_full(self) -> Route | LinkFeed | None:
        for route in self._blocking:
            if route.room() == 0:
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
        for feed in self._feeds.values():
            feed.ship()
        with anyio.fail_after(timeout):
            for waiter in waiters:
                await waiter.wait()
            for feed in self._feeds.values():
                with anyio.CancelScope(shield=True):  # a cancelled thread would leave the host's reply unread
                    await anyio.to_thread.run_sync(feed.link.flush, timeout)

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
        hosts = {id(feed): (feed.link.stats(), feed.held()) for feed in self._feeds.values()}
        for name, (feed, accepts) in self._hosted.items():
            host_stats, pending = hosts[id(feed)]
            s = host_stats[name]
            n = accepted_share(pending, accepts) + (accepted_share(held, accepts) if held else 0)
            stats[name] = msgspec.structs.replace(s, published=s.published + n, queued=s.queued + n) if n else s
        return stats


def _accepted(events: Sequence[Event], route: Route | LinkFeed) -> Sequence[Event]:
    accepts = route.accepts
    if accepts is None:
        return events
    return [event for event in events if type(event) in accepts]
