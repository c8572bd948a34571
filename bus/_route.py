"""One route per sink: a bounded buffer, the batching loop, retries, isolation and the counters.

Everything here runs on the bus's event loop thread; publishers append synchronously and the
route's task takes whole batches, so the per-event cost is a deque append and two comparisons.
The sink's own code runs on its `SinkThread`, so every call can be abandoned at a deadline.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Literal

import anyio

from ._config import SinkConfig
from ._errors import InvalidSinkResult
from ._events import Event
from ._process import ProcessSink
from ._rate import Reducer
from ._sink import Sink
from ._sink_thread import SinkThread
from ._stats import DropReason, SinkState, SinkStats

log = logging.getLogger("metricbus")

_NEVER = math.inf


class _Failed(Exception):
    """An attempt (after its retries) did not succeed; `hung` when the sink stopped answering."""

    def __init__(self, hung: bool) -> None:
        self.hung = hung


class Route:
    """The bus's side of one sink: `given` is the sink the user added, `sink` what the route
    calls (the same sink on its own thread, or, with isolate="process", a ProcessSink around it)."""

    def __init__(self, name: str, sink: Sink, config: SinkConfig, isolate: Literal["none", "process"] = "none") -> None:
        self.name = name
        self.given = sink
        self.sink = ProcessSink(sink) if isolate == "process" and not isinstance(sink, ProcessSink) else sink
        self.config = config
        self.accepts: frozenset[type] | None = None if sink.accepts is None else frozenset(sink.accepts)
        self.blocks = config.when_full == "block"
        self.reducer = Reducer(config.rate) if config.rate is not None else None
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
        self._calling: str | None = None  # the sink method being awaited, for hang reports
        self._thread: SinkThread | None = None
        self._wake_at: float = _NEVER
        self._wakeup = anyio.Event()
        self._space: anyio.Event | None = None
        self._flush_waiters: list[anyio.Event] = []
        # A batch that keeps failing is split to find the events at fault; this many failed
        # writes in a row without a success means the sink itself is broken, not its input.
        self._fail_limit = 2 * math.ceil(math.log2(config.max_batch + 1)) + 4
        self._failures_in_a_row = 0

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
        if self.reducer is not None:
            idle = not self.reducer.held
            for row in self.reducer.add(event):
                self._put(row)
            if idle and self.reducer.held:
                self._wake()  # a time window opened: the route's sleep must end with it
            return
        self._put(event)

    def _put(self, event: Event) -> None:
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
        if self.reducer is not None:
            idle, add = not self.reducer.held, self.reducer.add
            events = [row for event in events for row in add(event)]
            n = len(events)
            if idle and self.reducer.held:
                self._wake()
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

    def share(self, kinds: Mapping[type[Event], int]) -> int:
        """How many of these events (counted by kind) this sink would take."""
        accepts = self.accepts
        return sum(n for kind, n in kinds.items() if accepts is None or kind in accepts)

    def count_lost(self, n: int, reason: DropReason) -> None:
        """Account for `n` events meant for this sink that never reached the bus."""
        self.published += n
        self._drop(reason, n)

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

    def abandon(self, timeout: float) -> None:
        """Shutdown gave up on this sink: it is failed, and what it never got is counted."""
        lost = len(self.buf) + self.in_flight + self._clear_rows()
        self.buf.clear()
        self.in_flight = 0
        if lost:
            self._drop(DropReason.SHUTDOWN_TIMEOUT, lost)
        doing = f"{self._calling} did not return" if self._calling else "did not finish"
        self.last_error = f"{doing} within the shutdown timeout ({timeout}s)"
        self.state = SinkState.FAILED
        self._finish()

    def stats(self) -> SinkStats:
        return SinkStats(
            name=self.name,
            state=self.state,
            published=self.published,
            delivered=self.delivered,
            dropped=dict(self.dropped),
            queued=len(self.buf) + (self.reducer.held if self.reducer is not None else 0),
            in_flight=self.in_flight,
            batches=self.batches,
            failed_attempts=self.failed_attempts,
            last_error=self.last_error,
            restarts=self.sink.restarts,
            reduced=self.reducer.reduced if self.reducer is not None else 0,
        )

    def _clear_rows(self) -> int:
        return self.reducer.clear() if self.reducer is not None else 0

    def _release_rows(self) -> None:
        """Move the reducer's finished rows into the buffer: every row when a flush or the close
        wants them, else those whose time window has passed."""
        assert self.reducer is not None
        rows = self.reducer.drain() if self.closing or self._flush_waiters else self.reducer.expired(time.time())
        if rows:
            self.buf.extend(rows)

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
        self._thread = SinkThread(self.name)
        try:
            await self._attempt("open", self.sink.open)
            self.state = SinkState.OPEN
            await self._pump()
            await self._attempt("close", self.sink.close, retry=False)
        except _Failed as failed:
            self._fail()
            if not failed.hung:  # a sink that answers still gets its close, after a failure too
                with contextlib.suppress(_Failed):
                    await self._attempt("close", self.sink.close, retry=False)
        finally:
            self._finish()
            self._thread.stop()

    async def _pump(self) -> None:
        config = self.config
        while True:
            if self.reducer is not None:
                self._release_rows()
            buf = self.buf
            if not buf:
                if self._flush_waiters:
                    await self._flush_sink()
                elif self.closing:
                    return
                else:
                    await self._wait(1, self._patience())
                continue
            if len(buf) < config.max_batch and not (self.closing or self._flush_waiters):
                await self._wait(config.max_batch, min(config.max_interval, self._patience()))
                if self.reducer is not None:
                    self._release_rows()
            take = min(len(buf), config.max_batch)
            pop = buf.popleft
            batch = [pop() for _ in range(take)]
            self.in_flight = take
            self._release_space()
            await self._write(batch)

    def _patience(self) -> float:
        """How long the route may sleep: until the reducer's open time windows end, if any."""
        reducer = self.reducer
        if reducer is None or not reducer.held or reducer.limit.per_second is None:
            return _NEVER
        return 1.0 / reducer.limit.per_second

    async def _wait(self, threshold: int, patience: float) -> None:
        if len(self.buf) >= threshold or self.closing or self._flush_waiters:
            return
        self._wakeup = anyio.Event()
        self._wake_at = threshold
        with anyio.move_on_after(patience):
            await self._wakeup.wait()
        self._wake_at = _NEVER

    async def _write(self, batch: list[Event]) -> None:
        """Write a batch; if it keeps failing, split it to find and reject the events at fault."""
        worked_before = self._failures_in_a_row == 0 and self.batches > 0
        try:
            refused = await self._attempt("write_batch", self._write_batch, batch)
        except _Failed as failed:
            if failed.hung:
                raise
            await self._bisect(batch, worked_before)
            return
        self._settle(len(batch) - refused, refused)

    async def _bisect(self, batch: list[Event], worked_before: bool) -> None:
        """Write `batch` in halves, recursively, one attempt per part (the whole batch had its
        retries), so a poison event costs itself alone. An event that fails on its own is
        rejected if the sink is seen to work (before this batch, or on another part of it);
        otherwise, or after too many failures in a row, the sink itself is broken and fails."""
        written = refused = 0
        hung = False
        failed_alone: list[str] = []
        pending = [batch[len(batch) // 2 :], batch[: len(batch) // 2]] if len(batch) > 1 else []
        if len(batch) == 1:
            failed_alone.append(self.last_error or "")
        while pending:
            part = pending.pop()
            try:
                refused_here = await self._attempt("write_batch", self._write_batch, part, retry=False)
            except _Failed as failed:
                if failed.hung or self._failures_in_a_row > self._fail_limit:
                    hung = failed.hung
                    pending.append(part)
                    break
                if len(part) > 1:
                    pending += [part[len(part) // 2 :], part[: len(part) // 2]]
                else:
                    failed_alone.append(self.last_error or "")
                continue
            written += len(part) - refused_here
            refused += refused_here
        works = worked_before or written + refused > 0
        if pending or not works:  # the sink is broken: the unwritten rest is its failure
            self.delivered += written
            if refused:
                self._drop(DropReason.REJECTED, refused)
            self.in_flight = sum(map(len, pending)) + len(failed_alone)
            raise _Failed(hung=hung)
        for error in failed_alone:
            log.error("sink %r: rejected an event that fails on its own: %s", self.name, error)
        self._settle(written, refused + len(failed_alone))

    def _settle(self, written: int, rejected: int) -> None:
        self.delivered += written
        if rejected:
            self._drop(DropReason.REJECTED, rejected)
        self.batches += 1
        self.in_flight = 0

    async def _write_batch(self, events: Sequence[Event]) -> int:
        """The sink's write_batch, with its result checked: None or a count of refused events."""
        result = await self.sink.write_batch(events)
        if result is None:
            return 0
        if type(result) is not int or not 0 <= result <= len(events):
            raise InvalidSinkResult(
                f"write_batch returned {result!r}; it must return None or the number of events "
                f"it refused (0..{len(events)})"
            )
        return result

    async def _flush_sink(self) -> None:
        waiters, self._flush_waiters = self._flush_waiters, []
        try:
            await self._attempt("flush", self.sink.flush)
        finally:
            for waiter in waiters:
                waiter.set()

    async def _attempt(self, what: str, call: Callable[..., Awaitable[Any]], *args: Any, retry: bool = True) -> Any:
        """Call a sink method on its thread with the retry policy; raise `_Failed` when it keeps
        failing, or at once when it does not answer within the call timeout."""
        assert self._thread is not None
        policy = self.config.retry
        attempts = policy.max_attempts if retry else 1
        for attempt in range(1, attempts + 1):
            self._calling = what
            try:
                with anyio.move_on_after(self.config.call_timeout) as deadline:
                    result = await self._thread.call(call, *args)
                if deadline.cancelled_caught:
                    self.failed_attempts += 1
                    self.last_error = f"{what} did not return within call_timeout={self.config.call_timeout}s (hung)"
                    log.error("sink %r: %s", self.name, self.last_error)
                    raise _Failed(hung=True)
            except _Failed:
                raise
            except Exception as exc:  # a sink's failure is data for the stats, never the caller's
                self.failed_attempts += 1
                self.last_error = f"{what}: {type(exc).__name__}: {exc}"
                log.warning("sink %r: %s failed (attempt %d of %d): %r", self.name, what, attempt, attempts, exc)
                if attempt < attempts:
                    await anyio.sleep(policy.delay(attempt))
                continue
            finally:
                self._calling = None
            self._failures_in_a_row = 0
            return result
        self._failures_in_a_row += 1
        raise _Failed(hung=False)

    def _fail(self) -> None:
        lost = len(self.buf) + self.in_flight + self._clear_rows()
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
