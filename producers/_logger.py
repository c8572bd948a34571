"""MetricLogger: the synchronous front door for an ordinary training loop.

The training thread builds a validated event and appends it to a deque (a few hundred ns); a
background thread runs one `MetricBus` and drains the deque in batches every `poll_interval`.
No per-call thread hand-off, no lock, no await on the training thread.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterable, Mapping
from types import FrameType, TracebackType
from typing import Any

import anyio
from anyio.from_thread import BlockingPortal

from bus import (
    DEFAULT_ORIGIN,
    BusClosed,
    BusStateError,
    Context,
    DeliveryError,
    DropReason,
    Event,
    Histogram,
    Hparams,
    InvalidConfig,
    MetricBus,
    Metrics,
    Origin,
    Scalar,
    Sink,
    SinkStats,
    StopTraining,
    Text,
)

from ._frequency import LogFrequency

__all__ = ["MetricLogger"]

log = logging.getLogger("metricbus")


def _backend_options(use_uvloop: bool | None) -> dict[str, Any]:
    if use_uvloop is False:
        return {}
    try:
        import uvloop  # noqa: F401
    except ImportError:
        if use_uvloop:
            raise InvalidConfig("use_uvloop=True but uvloop is not installed (pip install 'metricbus[fast]')") from None
        return {}
    return {"use_uvloop": True}


class MetricLogger:
    """Log from synchronous code; events reach the sinks from a background thread.

        with MetricLogger(sinks=[CsvSink("runs/exp1/metrics.csv")]) as log:
            for step in range(n):
                log.scalars({"loss": loss, "lr": lr}, step=step)   # returns at once

    `sinks` are added with default settings; use `add_sink(sink, when_full=..., ...)` for others.
    `log_freq` (an int N, "batch", "epoch" or a `LogFrequency`) skips calls before any event is
    built; `hparams` and `publish` are never skipped.
    When `pending_limit` events wait for the bus (only when a `block` sink is full), logging
    waits up to `block_timeout` seconds for room; past that the overflow is dropped and counted
    (reason "block_timeout", in every sink's stats) until the bus catches up, so a stuck sink
    costs the loop one `block_timeout` at most. With only drop-policy sinks logging never waits;
    the overflow is counted as "full".
    A script that ends without `close()` (or `with`), by an exception, `sys.exit`, SIGTERM or
    Ctrl-C still drains: an exit hook closes every open logger before the interpreter shuts down
    its thread pools, and reports on stderr what could not be delivered.
    """

    def __init__(
        self,
        sinks: Iterable[Sink] = (),
        *,
        origin: Origin = DEFAULT_ORIGIN,
        context: Context | None = None,
        shutdown_timeout: float = 10.0,
        raise_on_loss: bool = True,
        pending_limit: int = 100_000,
        block_timeout: float = 30.0,
        poll_interval: float = 0.01,
        use_uvloop: bool | None = None,
        handle_sigterm: bool = True,
        log_freq: int | str | LogFrequency | None = None,
    ) -> None:
        if pending_limit < 1 or block_timeout <= 0 or poll_interval <= 0:
            raise InvalidConfig("pending_limit, block_timeout and poll_interval must be positive")
        self._origin = origin
        self._context = context
        self._plain = origin is DEFAULT_ORIGIN and context is None  # events need no origin/context
        self.pending_limit = pending_limit
        self.block_timeout = block_timeout
        self.poll_interval = poll_interval
        self._lost: dict[type[Event], int] = {}  # dropped before the bus, not yet counted on it
        self._lost_lock = threading.Lock()
        self._dropped_before_bus = 0  # already counted on the bus
        self._overflowing = False  # waited block_timeout once: drop until the bus catches up
        self._pid = os.getpid()
        self._freq = None if log_freq is None else LogFrequency.parse(log_freq)  # type: ignore[arg-type]
        self._pending: deque[Event] = deque()
        self._room = threading.Event()
        self._closed = False
        self._stop_reason: str | None = None
        self._quiet = True  # not closed and no stop requested: the hot path may just append
        self._bus = MetricBus(sinks, shutdown_timeout=shutdown_timeout, raise_on_loss=raise_on_loss)
        self._portal: BlockingPortal | None = None
        self._stop: anyio.Event | None = None
        self._poll_scope: anyio.CancelScope | None = None
        self._drain_lock: anyio.Lock | None = None
        self._error: BaseException | None = None
        self._final_stats: Mapping[str, SinkStats] = {}
        self._ready = threading.Event()
        self._thread = threading.Thread(
            target=anyio.run,
            args=(self._main,),
            kwargs={"backend": "asyncio", "backend_options": _backend_options(use_uvloop)},
            name="metricbus",
            daemon=True,  # atexit below drains it; a daemon thread never blocks interpreter exit
        )
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error
        _open_loggers.add(self)
        self._previous_sigterm: Any = None
        if handle_sigterm:
            self._install_sigterm()

    # ---- the training thread's hot path ----

    def scalar(
        self, name: str, value: float, step: int, *, wall_time: float | None = None, epoch_end: bool = False
    ) -> None:
        """Log one value. Raises `InvalidEvent` here, at the call, for a bad name/value/step."""
        if self._freq is not None and not self._freq(step, epoch_end=epoch_end):
            return  # skipped before anything is built
        if wall_time is None and self._plain:
            event = Scalar(name, value, step)
        else:
            event = Scalar(name, value, step, wall_time=_now(wall_time), origin=self.origin, context=self.context)
        pending = self._pending
        if self._quiet and len(pending) < self.pending_limit:  # the hot path: one append
            pending.append(event)
        else:
            self._put(event)

    def scalars(
        self, values: Mapping[str, float], step: int, *, wall_time: float | None = None, epoch_end: bool = False
    ) -> None:
        """Log many values at one step as one `Metrics` event (one W&B row, one CSV row)."""
        if self._freq is not None and not self._freq(step, epoch_end=epoch_end):
            return
        if wall_time is None and self._plain:
            event = Metrics(values, step)  # type: ignore[arg-type]
        else:
            event = Metrics(values, step, wall_time=_now(wall_time), origin=self.origin, context=self.context)  # type: ignore[arg-type]
        pending = self._pending
        if self._quiet and len(pending) < self.pending_limit:
            pending.append(event)
        else:
            self._put(event)

    @property
    def origin(self) -> Origin:
        """The origin of every event this logger builds."""
        return self._origin

    @origin.setter
    def origin(self, origin: Origin) -> None:
        self._origin = origin
        self._plain = origin is DEFAULT_ORIGIN and self._context is None

    @property
    def context(self) -> Context | None:
        """The context of every event this logger builds from now on (e.g. the current epoch)."""
        return self._context

    @context.setter
    def context(self, context: Context | None) -> None:
        self._context = context
        self._plain = self._origin is DEFAULT_ORIGIN and context is None

    def histogram(self, name: str, values: Any, step: int, *, epoch_end: bool = False) -> None:
        """Log a distribution (list, numpy array or tensor); sinks bin it off this thread."""
        if self._freq is not None and not self._freq(step, epoch_end=epoch_end):
            return
        self._put(Histogram(name, step, values=values, origin=self.origin, context=self.context))

    def text(self, name: str, text: str, step: int, *, epoch_end: bool = False) -> None:
        """Log a piece of text."""
        if self._freq is not None and not self._freq(step, epoch_end=epoch_end):
            return
        self._put(Text(name, text, step, origin=self.origin, context=self.context))

    def hparams(self, params: Mapping[str, Any], metrics: Mapping[str, float] | None = None) -> None:
        """Log the run's hyperparameters (and, optionally, the metrics they produced)."""
        self._put(Hparams(dict(params), dict(metrics or {}), origin=self.origin, context=self.context))

    def publish(self, event: Event) -> None:
        """Log a ready-made event as is (its own origin and context are kept)."""
        self._put(event)

    def _put(self, event: Event) -> None:
        if self._closed:
            self._raise_closed()
        pending = self._pending
        if len(pending) >= self.pending_limit and not self._make_room():
            self._count_lost(type(event))
            return
        pending.append(event)
        if self._stop_reason is not None:
            self._raise_stop()

    def _raise_closed(self) -> None:
        if self._pid != os.getpid():
            raise BusStateError(
                f"this MetricLogger belongs to process {self._pid}; a forked child cannot log through it "
                "(its bus thread did not survive the fork): create a MetricLogger in the child"
            )
        raise BusClosed("this MetricLogger is closed")

    def request_stop(self, reason: str) -> None:
        """Ask the training loop to stop: the next logging call raises `StopTraining(reason)`
        (after the event it carries has been queued). Safe to call from any thread."""
        if self._stop_reason is None:
            self._stop_reason = reason
            self._quiet = False

    def _raise_stop(self) -> None:
        reason, self._stop_reason = self._stop_reason, None
        self._quiet = not self._closed
        raise StopTraining(reason)

    def _make_room(self) -> bool:
        """The bus is behind. Wait (up to `block_timeout`) for room if some sink is lossless;
        False means the event is to be dropped and counted."""
        if not self._bus._blocking or self._overflowing:
            return False
        deadline = time.monotonic() + self.block_timeout
        while len(self._pending) >= self.pending_limit:
            self._room.clear()
            if len(self._pending) < self.pending_limit:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._room.wait(remaining):
                if len(self._pending) < self.pending_limit:
                    break
                log.error(
                    "metricbus: a 'block' sink kept the logger full for %ss; dropping (and counting) "
                    "what does not fit until it catches up; see log.stats()",
                    self.block_timeout,
                )
                self._overflowing = True
                return False
        return True

    def _count_lost(self, kind: type[Event]) -> None:
        with self._lost_lock:
            self._lost[kind] = self._lost.get(kind, 0) + 1

    @property
    def dropped_before_bus(self) -> int:
        """Events dropped because the logger was full; also counted in every sink's stats."""
        return self._dropped_before_bus + sum(self._lost.values())

    # ---- control from the training thread ----

    def add_sink(self, sink: Sink, **options: Any) -> str:
        """Attach another sink while running; `options` as for `MetricBus.add_sink`."""
        name: str = self._call(lambda: self._bus.add_sink(sink, **options))
        return name

    def add_producer(self, fn: Any) -> None:
        """Run `async fn(bus)` on the bus's thread until close (see `MetricBus.add_producer`)."""
        self._call(lambda: self._bus.add_producer(fn))

    @property
    def bus(self) -> MetricBus:
        """The bus behind this logger. Use it only from its own thread (producers, sinks)."""
        return self._bus

    def flush(self, timeout: float | None = None) -> None:
        """Block until everything logged so far is written by every sink; `TimeoutError` after
        `timeout` seconds (a hung sink is failed at its `call_timeout` in any case)."""

        async def flush() -> None:
            with anyio.fail_after(timeout):
                await self._drain()
                await self._bus.flush()

        self._call(flush)

    def stats(self) -> Mapping[str, SinkStats]:
        """Per-sink counters, including everything logged so far (pending events are handed to
        the bus first, so the counters balance). After `close()`, the final counters."""
        if self._portal is None:
            return self._final_stats

        async def drained_stats() -> Mapping[str, SinkStats]:
            self._settle_lost()
            await self._drain(wait=False)
            return self._bus.stats(held=_kinds(self._pending))

        stats: Mapping[str, SinkStats] = self._call(drained_stats)
        return stats

    def close(self) -> None:
        """Drain every buffer into the sinks (within `shutdown_timeout`), close them and stop the
        background thread. Raises `DeliveryError` if some sink failed or lost events."""
        if self._pid != os.getpid():
            return  # a forked child's copy: the parent drains it
        if not self._closed:
            self._closed = True
            self._quiet = False
            self._restore_sigterm()
            portal = self._portal
            if portal is not None:
                with contextlib.suppress(RuntimeError):  # the loop already ended; _error says why
                    portal.call(self._request_shutdown)
        self._join()
        _open_loggers.discard(self)
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _join(self) -> None:
        self._thread.join(self._bus.shutdown_timeout + 2.0)
        if self._thread.is_alive():  # only if the loop itself is stuck: never a sink's doing
            log.error("metricbus thread did not stop within shutdown_timeout + 2 s")
            self._final_stats = self._bus.stats()

    def __enter__(self) -> MetricLogger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.close()
        except Exception:
            if exc_type is None:
                raise
            log.exception("metricbus: error while closing during another exception")

    # ---- the background thread ----

    async def _main(self) -> None:
        self._stop = anyio.Event()
        self._drain_lock = anyio.Lock()
        bus = self._bus
        try:
            async with BlockingPortal() as portal:
                await bus.__aenter__()
                self._portal = portal
                self._ready.set()
                try:
                    while not self._stop.is_set():
                        with anyio.CancelScope() as self._poll_scope:  # a drain waiting for room ends at stop
                            with anyio.move_on_after(self.poll_interval):
                                await self._stop.wait()
                            await self._drain()
                finally:
                    self._portal = None
                    await self._shut_down()
                    await portal.stop(cancel_remaining=True)
            if bus.raise_on_loss:
                bus.check_delivery()
        except BaseException as exc:  # surfaced to the training thread by close()
            self._error = exc
        finally:
            self._portal = None
            self._final_stats = bus.stats()
            self._room.set()
            self._ready.set()

    def _request_shutdown(self) -> None:
        assert self._stop is not None
        self._stop.set()
        if self._poll_scope is not None:
            self._poll_scope.cancel()

    async def _shut_down(self) -> None:
        """Hand the backlog to the bus and close it, all within one `shutdown_timeout`; what is
        still before the bus at the deadline is counted in every sink as `shutdown_timeout`."""
        bus = self._bus
        deadline = anyio.current_time() + bus.shutdown_timeout
        with anyio.move_on_after(bus.shutdown_timeout):
            await self._drain()
        self._settle_lost()
        if self._pending:
            bus.count_lost(_kinds(self._pending), DropReason.SHUTDOWN_TIMEOUT)
            self._pending.clear()
        await bus.aclose(timeout=max(0.0, deadline - anyio.current_time()))

    async def _drain(self, *, wait: bool = True) -> None:
        """Move pending events onto the bus, in chunks that fit, so that a deadline can stop it
        between chunks without losing (or leaving uncounted) a single event. `wait=False` moves
        only what fits now."""
        assert self._drain_lock is not None
        bus = self._bus
        if not wait and self._drain_lock.locked():
            return  # a drain waiting for room holds no event: the backlog is all in _pending
        async with self._drain_lock:  # one drain at a time keeps each producer's order
            self._settle_lost()
            pending = self._pending
            while pending:
                room = bus.room()
                if room == 0:
                    if not wait:
                        return
                    await bus.wait_for_room()
                    continue
                n = min(len(pending), room)
                pop = pending.popleft
                batch = [pop() for _ in range(n)]
                self._overflowing = False
                self._room.set()
                bus.publish_many_nowait(batch)
                await anyio.lowlevel.checkpoint()

    def _settle_lost(self) -> None:
        """Count, on the bus, what the training thread dropped before it."""
        if self._lost:
            with self._lost_lock:
                lost, self._lost = self._lost, {}
            reason = DropReason.BLOCK_TIMEOUT if self._bus._blocking else DropReason.FULL
            self._bus.count_lost(lost, reason)
            self._dropped_before_bus += sum(lost.values())

    def _call(self, fn: Any) -> Any:
        """Run `fn` (sync or async) on the bus's thread and return its result."""
        portal = self._portal
        if portal is None or self._pid != os.getpid():  # the bus thread has ended, or not here
            self._raise_closed()
        assert portal is not None
        return portal.call(fn)

    # ---- SIGTERM: turn it into SystemExit so `with` blocks and atexit drain the sinks ----

    def _install_sigterm(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return
        self._previous_sigterm = signal.SIG_DFL
        signal.signal(signal.SIGTERM, _raise_system_exit)

    def _restore_sigterm(self) -> None:
        if self._previous_sigterm is None or threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) is _raise_system_exit:
            signal.signal(signal.SIGTERM, self._previous_sigterm)
        self._previous_sigterm = None


def _kinds(events: Iterable[Event]) -> dict[type[Event], int]:
    """How many events of each kind: what the bus needs to count them in the right sinks."""
    kinds: dict[type[Event], int] = {}
    for event in events:
        kinds[type(event)] = kinds.get(type(event), 0) + 1
    return kinds


def _now(wall_time: float | None) -> float:
    return time.time() if wall_time is None else wall_time


def _raise_system_exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


# ---- every open logger drains at exit, and none is used across a fork ----

_open_loggers: weakref.WeakSet[MetricLogger] = weakref.WeakSet()


def _close_at_exit() -> None:
    """Close every logger still open when the interpreter shuts down, reporting losses on stderr.

    Registered with threading's exit hooks, which run before concurrent.futures shuts its pools
    and long before `atexit` (by then an executor-based drain fails)."""
    for logger in list(_open_loggers):
        try:
            logger.close()
        except DeliveryError as exc:
            print(f"metricbus: at exit, {exc}", file=sys.stderr, flush=True)
        except Exception as exc:
            print(f"metricbus: at exit, closing a MetricLogger failed: {exc!r}", file=sys.stderr, flush=True)


def _forget_after_fork() -> None:
    """In a forked child the bus threads are gone: loggers there refuse use instead of hanging."""
    for logger in list(_open_loggers):
        logger._closed = True
        logger._quiet = False
        logger._portal = None
        logger._pending.clear()  # the parent delivers these
    _open_loggers.clear()


# Register after concurrent.futures' own hook, so ours runs first (they run in reverse) and every
# thread pool is still usable while the loggers drain.
import concurrent.futures.thread  # noqa: E402, F401

try:
    threading._register_atexit(_close_at_exit)  # type: ignore[attr-defined]
except (AttributeError, RuntimeError):  # another interpreter, or already shutting down
    atexit.register(_close_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)
