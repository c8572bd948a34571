"""One route per sink: a bounded buffer, the batching loop, retries and the counters.

Everything here runs on the bus's event loop thread; publishers append synchronously and the
route's task takes whole batches, so the per-event cost is a deque append and two comparisons.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Sequence

import anyio

from ._config import SinkConfig
from ._events import Event
from ._sink import Sink
from ._stats import DropReason, SinkState, SinkStats

log = logging.getLogger("metricbus")

_NEVER = math.inf


class Route:
    """The bus's side of one sink."""

    def __init__(self, name: str, sink: Sink, config: SinkConfig) -> None:
        self.name = name
        self.sink = sink
        self.config = config
        self.accepts: frozenset[type] | None = None if sink.accepts is None else frozenset(sink.accepts)
        self.blocks = config.when_full == "block"
        self.capacity = config.capacity
        self.accepting = True  # False once failed or finished: publishers never wait for it
        self.buf: deque[Event] = deque()
        self.state = SinkState.PENDING
        self.published = 0
        self.delivered = 0
        self.dropped: dict[str, int] = {}
        self.in_flight = 0
        self.batches = 0
        self.failed_attempts = 0
        self.last_error: str | None = None
        self.closing = False
        self.done = anyio.Event()
        self._wake_at: float = _NEVER
        self._wakeup = anyio.Event()
        self._space: anyio.Event | None = None
        self._flush_waiters: list[anyio.Event] = []

    # ---- publisher side (synchronous, on the loop thread) ----

    def room(self) -> int:
        """How many more events fit before the when-full policy applies."""
        if not self.accepting:
            return 1 << 62
        return max(0, self.capacity - len(self.buf))

    async def wait_for_room(self) -> None:
        if self._space is None:
            self._space = anyio.Event()
        await self._space.wait()

    def offer(self, event: Event) -> None:
        """Take one event, applying the when-full policy. `block` callers checked room first."""
        self.published += 1
        if self.state is SinkState.FAILED:
            self._drop(DropReason.SINK_FAILED, 1)
            return
        buf = self.buf
        if len(buf) >= self.capacity:
            if self.config.when_full == "drop_newest":
                self._drop(DropReason.FULL, 1)
                return
            buf.popleft()
            self._drop(DropReason.FULL, 1)
        buf.append(event)
        if len(buf) >= self._wake_at:
            self._wake()

    def offer_many(self, events: Sequence[Event]) -> None:
        """Take a batch of events, applying the when-full policy to the overflow."""
        n = len(events)
        self.published += n
        if self.state is SinkState.FAILED:
            self._drop(DropReason.SINK_FAILED, n)
            return
        buf = self.buf
        overflow = len(buf) + n - self.capacity
        if overflow > 0:
            if self.config.when_full == "drop_newest":
                keep = max(0, n - overflow)
                self._drop(DropReason.FULL, n - keep)
                events = events[:keep]
            else:  # drop_oldest: the newest `capacity` of (buffer + batch) survive
                from_batch = min(n, overflow - min(overflow, len(buf)))
                from_buf = overflow - from_batch
                for _ in range(from_buf):
                    buf.popleft()
                events = events[from_batch:]
                self._drop(DropReason.FULL, overflow)
        buf.extend(events)
        if len(buf) >= self._wake_at:
            self._wake()

    def request_flush(self) -> anyio.Event:
        """An event set once everything offered so far is written and the sink flushed."""
        waiter = anyio.Event()
        if self.done.is_set():
            waiter.set()
        else:
            self._flush_waiters.append(waiter)
            self._wake()
        return waiter

    def request_close(self) -> None:
        self.closing = True
        self._wake()

    def abandon(self) -> None:
        """Shutdown gave up on this sink: count what it never got, release everyone waiting."""
        lost = len(self.buf) + self.in_flight
        self.buf.clear()
        self.in_flight = 0
        if lost:
            self._drop(DropReason.SHUTDOWN_TIMEOUT, lost)
            self.last_error = self.last_error or f"did not finish within the shutdown timeout; {lost} events lost"
        self._finish()

    def stats(self) -> SinkStats:
        return SinkStats(
            name=self.name,
            state=self.state,
            published=self.published,
            delivered=self.delivered,
            dropped=dict(self.dropped),
            queued=len(self.buf),
            in_flight=self.in_flight,
            batches=self.batches,
            failed_attempts=self.failed_attempts,
            last_error=self.last_error,
        )

    def _drop(self, reason: DropReason, n: int) -> None:
        self.dropped[reason.value] = self.dropped.get(reason.value, 0) + n

    def _wake(self) -> None:
        self._wake_at = _NEVER
        self._wakeup.set()

    def _release_space(self) -> None:
        if self._space is not None:
            self._space.set()
            self._space = None

    # ---- the route's task ----

    async def run(self) -> None:
        """Open the sink, write batches until closed and drained, then flush and close it."""
        try:
            if await self._attempt("open", self.sink.open):
                self.state = SinkState.OPEN
                await self._pump()
                await self._attempt("close", self.sink.close, retry=False)  # also after a failure
        finally:
            self._finish()

    async def _pump(self) -> None:
        config = self.config
        while self.state is SinkState.OPEN:
            buf = self.buf
            if not buf:
                if self._flush_waiters:
                    await self._flush_sink()
                elif self.closing:
                    return
                else:
                    await self._wait(1, _NEVER)
                continue
            if len(buf) < config.max_batch and not (self.closing or self._flush_waiters):
                await self._wait(config.max_batch, config.max_interval)
            take = min(len(buf), config.max_batch)
            pop = buf.popleft
            batch = [pop() for _ in range(take)]
            self.in_flight = take
            self._release_space()
            await self._write(batch)

    async def _wait(self, threshold: int, patience: float) -> None:
        if len(self.buf) >= threshold or self.closing or self._flush_waiters:
            return
        self._wakeup = anyio.Event()
        self._wake_at = threshold
        with anyio.move_on_after(patience):
            await self._wakeup.wait()
        self._wake_at = _NEVER

    async def _write(self, batch: list[Event]) -> None:
        rejected = await self._attempt("write_batch", self.sink.write_batch, batch)
        if rejected is False:
            return  # the route failed; _fail counted the batch
        n_rejected = rejected if isinstance(rejected, int) and not isinstance(rejected, bool) else 0
        if n_rejected:
            self._drop(DropReason.REJECTED, n_rejected)
        self.delivered += len(batch) - n_rejected
        self.batches += 1
        self.in_flight = 0

    async def _flush_sink(self) -> None:
        waiters, self._flush_waiters = self._flush_waiters, []
        await self._attempt("flush", self.sink.flush)
        for waiter in waiters:
            waiter.set()

    async def _attempt(self, what: str, call, *args, retry: bool = True):  # type: ignore[no-untyped-def]
        """Call a sink method with the retry policy. Returns its result (True for None), or False
        once the sink has been marked failed."""
        policy = self.config.retry
        attempts = policy.max_attempts if retry else 1
        for attempt in range(1, attempts + 1):
            try:
                result = await call(*args)
            except Exception as exc:  # a sink's failure is data for the stats, never the caller's
                self.failed_attempts += 1
                self.last_error = f"{what}: {type(exc).__name__}: {exc}"
                log.warning("sink %r: %s failed (attempt %d of %d): %r", self.name, what, attempt, attempts, exc)
                if attempt < attempts:
                    await anyio.sleep(policy.delay(attempt))
                continue
            return True if result is None else result
        self._fail()
        return False

    def _fail(self) -> None:
        lost = len(self.buf) + self.in_flight
        log.error("sink %r failed: %s; %d queued events dropped", self.name, self.last_error, lost)
        self.state = SinkState.FAILED
        self.accepting = False
        self.buf.clear()
        self.in_flight = 0
        self._drop(DropReason.SINK_FAILED, lost)
        self._release_space()
        for waiter in self._flush_waiters:
            waiter.set()
        self._flush_waiters.clear()

    def _finish(self) -> None:
        self.accepting = False
        if self.state is not SinkState.FAILED:
            self.state = SinkState.CLOSED
        self._release_space()
        for waiter in self._flush_waiters:
            waiter.set()
        self._flush_waiters.clear()
        self.done.set()
