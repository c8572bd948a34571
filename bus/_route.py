"""One route per sink: a bounded buffer, the batching loop, retries, isolation and the counters.

Everything here runs on the bus's event loop thread; publishers append synchronously and the
route's task takes whole batches, so the per-event cost is a deque append and two comparisons.
The sink's own code runs on its `SinkThread`, so every call can be abandoned at a deadline.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio

from ._config import SinkConfig
from ._errors import InvalidSinkResult
from ._events import Event
from ._rate import Reducer
from ._sink import Sink
from ._sink_thread import SinkThread
from ._spool import Spool, write_segment
from ._stats import DropReason, SinkState, SinkStats

log = logging.getLogger("metricbus")

_NEVER = math.inf
SPOOL_ROOT = Path("metricbus-spool")  # where sinks without a spool_dir spill and save what they missed


def _safe(name: str) -> str:
    """A sink name as one directory name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "sink"


class _Failed(Exception):
    """An attempt (after its retries) did not succeed; `hung` when the sink stopped answering."""

    def __init__(self, hung: bool) -> None:
        self.hung = hung


class Route:
    """The bus's side of one sink: its buffer, batching, policy, retries and counters."""

    def __init__(self, name: str, sink: Sink, config: SinkConfig) -> None:
        self.name = name
        self.given = sink
        self.sink = sink
        self.config = config
        self.accepts: frozenset[type] | None = None if sink.accepts is None else frozenset(sink.accepts)
        self.blocks = config.when_full == "block"
        self.reducer = Reducer(config.rate) if config.rate is not None else None
        self.spool_dir = Path(config.spool_dir) if config.spool_dir else SPOOL_ROOT / _safe(name)
        self.saved_to: Path | None = None  # where what the sink missed was saved, if it failed
        self.spool: Spool | None = None
        if config.when_full == "spill":
            self.spool = Spool(self.spool_dir, limit_bytes=config.spool_limit)
            self.spool.open()  # a previous run's spill: delivered first, counted as published here
        self._plain = self.reducer is None and self.spool is None  # offer() may just append
        self.capacity = config.capacity
        self.accepting = True  # False once failed or finished: publishers never wait for it
        self.buf: deque[Event] = deque()
        self.state = SinkState.PENDING
        self.published = self.spool.count if self.spool is not None else 0
        self.delivered = 0
        self.dropped: dict[str, int] = {}
        self._unsent: list[Event] = []  # the events handed to the sink and not settled yet
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
        self.on_settled: Callable[[], None] | None = None  # called after each batch the sink wrote

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
        buf = self.buf
        if self._plain and len(buf) < self.capacity:  # the hot path: room, nothing to fold or spill
            buf.append(event)
            if len(buf) >= self._wake_at:
                self._wake()
            return
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
        spool = self.spool
        if spool is not None and (spool.count or len(buf) >= self.capacity):  # spill, in order
            if not spool.append(event):
                self._drop(DropReason.SPOOL_FULL, 1)
            return
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
        if self.spool is not None:
            for event in events:
                self._put(event)
            if len(self.buf) >= self._wake_at:
                self._wake()
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
        """Shutdown gave up on this sink: it is failed, and what it never got is counted (and
        saved to its spool directory)."""
        doing = f"{self._calling} did not return" if self._calling else "did not finish"
        self.last_error = f"{doing} within the shutdown timeout ({timeout}s)"
        self._lose(DropReason.SHUTDOWN_TIMEOUT)
        self.state = SinkState.FAILED
        self._plain = False
        self._finish()

    def stats(self) -> SinkStats:
        return SinkStats(
            name=self.name,
            state=self.state,
            published=self.published,
            delivered=self.delivered,
            dropped=dict(self.dropped),
            queued=len(self.buf)
            + (self.reducer.held if self.reducer is not None else 0)
            + (self.spool.count if self.spool is not None else 0),
            in_flight=self.in_flight,
            batches=self.batches,
            failed_attempts=self.failed_attempts,
            last_error=self.last_error,
            restarts=self.sink.restarts,
            reduced=self.reducer.reduced if self.reducer is not None else 0,
            saved_to=None if self.saved_to is None else str(self.saved_to),
        )

    @property
    def in_flight(self) -> int:
        return len(self._unsent)

    def _lose(self, reason: DropReason) -> int:
        """The sink will get nothing more: count every event it did not get (handed over and
        unsettled, buffered, in open rate-limit rows, spooled), and save them to its spool
        directory for `metricbus replay`. Returns how many."""
        unsent = [*self._unsent, *self.buf, *(self.reducer.drain() if self.reducer is not None else [])]
        self._unsent = []
        self.buf.clear()
        lost = len(unsent) + (self.spool.count if self.spool is not None else 0)
        if lost:
            self._drop(reason, lost)
            where = self._save(unsent)
            if where is not None:
                self.saved_to = where
        return lost

    def _save(self, unsent: list[Event]) -> Path | None:
        """Write what the sink missed to its spool directory, oldest first; None if it cannot."""
        try:
            if self.spool is not None:
                self.spool.close()
            if unsent:
                write_segment(self.spool_dir, unsent, first=True)
        except OSError as exc:
            log.error("sink %r: could not save the events it missed to %s: %r", self.name, self.spool_dir, exc)
            return None
        log.error(
            "sink %r: the events it missed are saved in %s; replay them with: metricbus replay %s --to ...",
            self.name,
            self.spool_dir,
            self.spool_dir,
        )
        return self.spool_dir

    def _release_rows(self) -> None:
        """Move the reducer's finished rows into the buffer: every row when a flush or the close
        wants them, else those whose time window has passed."""
        assert self.reducer is not None
        rows = self.reducer.drain() if self.closing or self._flush_waiters else self.reducer.expired()
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
        self._thread = SinkThread(self.name) if self.sink.blocking else None
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
            if self._thread is not None:
                self._thread.stop()

    async def _pump(self) -> None:
        config = self.config
        while True:
            if self.reducer is not None:
                self._release_rows()
            if self.spool is not None and self.spool.count and len(self.buf) < self.capacity:
                self.buf.extend(self.spool.take(self.capacity - len(self.buf)))
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
            self._unsent = batch
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
        failed_alone: list[tuple[Event, str]] = []
        pending = [batch[len(batch) // 2 :], batch[: len(batch) // 2]] if len(batch) > 1 else []
        if len(batch) == 1:
            failed_alone.append((batch[0], self.last_error or ""))
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
                    failed_alone.append((part[0], self.last_error or ""))
                continue
            written += len(part) - refused_here
            refused += refused_here
        works = worked_before or written + refused > 0
        if pending or not works:  # the sink is broken: the unwritten rest is its failure
            self.delivered += written
            if refused:
                self._drop(DropReason.REJECTED, refused)
            self._unsent = [e for e, _ in failed_alone] + [e for part in reversed(pending) for e in part]
            raise _Failed(hung=hung)
        for _, error in failed_alone:
            log.error("sink %r: rejected an event that fails on its own: %s", self.name, error)
        self._settle(written, refused + len(failed_alone))

    def _settle(self, written: int, rejected: int) -> None:
        self.delivered += written
        if rejected:
            self._drop(DropReason.REJECTED, rejected)
        self.batches += 1
        self._unsent = []
        if self.on_settled is not None:
            self.on_settled()

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
        policy = self.config.retry
        attempts = policy.max_attempts if retry else 1
        for attempt in range(1, attempts + 1):
            self._calling = what
            try:
                with anyio.move_on_after(self.config.call_timeout) as deadline:
                    result = await (self._thread.call(call, *args) if self._thread is not None else call(*args))
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
        lost = self._lose(DropReason.SINK_FAILED)
        log.error("sink %r failed: %s; %d events it did not get are counted", self.name, self.last_error, lost)
        self.state = SinkState.FAILED
        self.accepting = False
        self._plain = False  # what is offered from now on is counted as lost
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
