"""One route per sink: the batching loop, what to do about an outage or a failing batch, and the
counters. The buffer and its when-full policy are `SinkBuffer` (`_buffer.py`), the spool's files
`_spool.py`, calling the sink (its thread, the call timeout, retries) `SinkCalls`
(`_sink_calls.py`).

Everything here runs on the bus's event loop thread; publishers append synchronously and the
route's task takes whole batches, so the per-event cost is a deque append and two comparisons.
The spool's disk work runs on worker threads, so a dead disk never stalls the loop.

A failed call means one of two things (`SinkCalls` tells them apart), and the route acts on it:

- **the sink is down**: `OSError` and its kin (a full disk, a share that went away, a refused
  connection, a timeout). Nothing is wrong with the events: the route keeps
  the batch and everything after it (in memory, then in the spool, whatever the when-full policy,
  so publishers never wait on it), probes the sink again with capped backoff, and catches up in
  order when it answers. Only shutdown ends the wait; then all it did not get is saved.
- **these events are bad**: any other exception. The batch is retried (`RetryPolicy`), then split
  to find the events at fault, which are rejected; a sink that fails on every part is failed.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import anyio

from ._buffer import SinkBuffer
from ._config import SinkConfig
from ._events import Event
from ._rate import Reducer
from ._sink import Sink
from ._sink_calls import Down, Failed, SinkCalls
from ._spool import load_segment, save_events, scan, spool_dir_of, write_segment
from ._stats import DropReason, SinkState, SinkStats

log = logging.getLogger("metricbus")

_NEVER = math.inf


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
        self.spool_dir = spool_dir_of(name, sink.output_dir, config.spool_dir)
        self.buffer = SinkBuffer(config, self.spool_dir, self._drop)
        self.buf = self.buffer.mem  # the memory part: publishers append here directly
        self.capacity = config.capacity
        self._plain = self.reducer is None and not self.buffer.spilling  # offer() may just append
        self.accepting = True  # False once failed or finished: publishers never wait for it
        self.state = SinkState.PENDING
        self.down_since: float | None = None
        self.saved_to: Path | None = None  # where what the sink missed was saved
        self.saved = 0  # how many events were saved there
        self.published = 0
        if config.when_full == "spill":  # a persistent queue: what a previous run left comes first
            self.published += self.buffer.spool.adopt(scan(self.spool_dir))
        self.delivered = 0
        self.dropped: dict[str, int] = {}
        self._unsent: list[Event] = []  # the events handed to the sink and not settled yet
        self.batches = 0
        self.calls = SinkCalls(name, sink, config)  # where its code runs, timeouts, retries
        self.closing = False
        self.done = anyio.Event()
        self.on_settled: Callable[[], None] | None = None  # called after each batch the sink wrote
        self.on_writing: Callable[[int], None] | None = None  # called with a batch's size as it is handed over
        self._wake_at: float = _NEVER
        self._wakeup = anyio.Event()
        self._space: anyio.Event | None = None
        self._flush_waiters: list[anyio.Event] = []
        self._flushing: list[anyio.Event] = []  # the waiters of the flush the sink is doing now
        self._spool_due = anyio.Event()  # the spool's tail is due to be written
        self._spool_lock = anyio.Lock()  # one tail written at a time, and never while it is saved
        self._probes = 0  # failed probes of a down sink in a row
        self._close_probes = 0  # probes since the bus started closing
        # A batch that keeps failing is split to find the events at fault; this many failed
        # writes in a row without a success means the sink itself is broken, not its input.
        self._fail_limit = 2 * math.ceil(math.log2(config.max_batch + 1)) + 4

    # ---- publisher side (synchronous, on the loop thread) ----

    def room(self) -> int:
        """How many more events fit before a `block` policy makes publishers wait."""
        if not self.accepting:
            return 1 << 62
        return self.buffer.room()

    async def wait_for_room(self) -> None:
        if self._space is None:
            self._space = anyio.Event()
        await self._space.wait()

    def offer(self, event: Event) -> None:
        """Take one event. `block` callers checked room first."""
        self.published += 1
        buf = self.buf
        if self._plain and len(buf) < self.capacity:  # the hot path: room, nothing to fold or spill
            buf.append(event)
            if len(buf) >= self._wake_at:
                self._wake()
            return
        self._take((event,))

    def offer_many(self, events: Sequence[Event]) -> None:
        """Take a batch of events in order."""
        self.published += len(events)
        self._take(events)

    def _take(self, events: Sequence[Event]) -> None:
        if self.state is SinkState.FAILED:
            self._drop(DropReason.SINK_FAILED, len(events))
            return
        if self.reducer is not None:
            idle = not self.reducer.held
            events = self.reducer.add_many(events)
            if idle and self.reducer.held:
                self._wake()  # a time window opened: the route's sleep must end with it
        self.buffer.put(events)
        if len(self.buf) >= self._wake_at:
            self._wake()
        if self.buffer.spool.tail_full:
            self._spool_due.set()

    def share(self, kinds: Mapping[type[Event], int]) -> int:
        """How many of these events (counted by kind) this sink would take."""
        accepts = self.accepts
        return sum(n for kind, n in kinds.items() if accepts is None or kind in accepts)

    def count_lost(self, n: int, reason: DropReason) -> None:
        """Account for `n` events meant for this sink that never reached the bus."""
        self.published += n
        self._drop(reason, n)

    def request_flush(self) -> anyio.Event:
        """An event set once everything offered so far is written and the sink flushed (at once
        if the sink is down: what it holds is kept, and its stats say so)."""
        waiter = anyio.Event()
        if self.done.is_set() or self.state is SinkState.DOWN:
            waiter.set()
        else:
            self._flush_waiters.append(waiter)
            self._wake()
        return waiter

    def request_close(self) -> None:
        self.closing = True
        self._wake()

    async def abandon(self, shutdown_timeout: float) -> None:
        """Shutdown gave up on this sink: it is failed, and what it never got is counted and
        saved to its spool directory (within a few seconds; a dead disk cannot hold shutdown)."""
        calling = self.calls.calling
        doing = f"{calling} did not return" if calling else "did not finish"
        self.calls.last_error = f"{doing} within the shutdown timeout ({shutdown_timeout}s)"
        self.state = SinkState.FAILED
        self._plain = False
        with anyio.move_on_after(5.0):
            await self._lose(DropReason.SHUTDOWN_TIMEOUT)
        self._finish()

    def stats(self) -> SinkStats:
        reducer = self.reducer
        oldest = self._unsent[0].wall_time if self._unsent else self.buffer.oldest_wall_time()
        return SinkStats(
            name=self.name,
            state=self.state,
            published=self.published,
            delivered=self.delivered,
            dropped=dict(self.dropped),
            queued=len(self.buffer) + (reducer.held if reducer is not None else 0),
            in_flight=self.in_flight,
            batches=self.batches,
            failed_attempts=self.calls.failed_attempts,
            last_error=self.calls.last_error,
            restarts=self.sink.restarts,
            reduced=reducer.reduced if reducer is not None else 0,
            saved_to=None if self.saved_to is None else str(self.saved_to),
            saved=self.saved,
            down_since=self.down_since,
            spooled_bytes=self.buffer.spool.bytes,
            lag=0.0 if oldest is None else max(0.0, time.time() - oldest),
        )

    @property
    def in_flight(self) -> int:
        return len(self._unsent)

    def _drop(self, reason: DropReason, n: int) -> None:
        self.dropped[reason.value] = self.dropped.get(reason.value, 0) + n

    def _wake(self) -> None:
        self._wake_at = _NEVER
        self._wakeup.set()

    def _release_space(self) -> None:
        if self._space is not None:
            self._space.set()
            self._space = None

    def _release_flushes(self) -> None:
        for waiter in [*self._flush_waiters, *self._flushing]:
            waiter.set()
        self._flush_waiters.clear()

    # ---- what the sink did not get ----

    async def _lose(self, reason: DropReason) -> int:
        """The sink will get nothing more: count every event it did not get (handed over and
        unsettled, buffered, in open rate-limit rows, spooled) and save them to its spool
        directory, oldest first, for `metricbus replay`. Returns how many."""
        async with self._spool_lock:  # a tail being written finishes first: it is on disk then
            return await self._save(reason)

    async def _save(self, reason: DropReason) -> int:
        rows = self.reducer.drain() if self.reducer is not None else []
        older, newer = self.buffer.clear()  # what is in memory, before and after the spool's files
        older[:0] = self._unsent
        newer += rows
        self._unsent = []
        on_disk = self.buffer.spool.give_up()
        lost = len(older) + on_disk + len(newer)
        if not lost:
            return 0
        self._drop(reason, lost)
        saved, folder = on_disk, self.spool_dir if on_disk else None
        for events, first in ((older, True), (newer, False)):
            if events:
                where = await anyio.to_thread.run_sync(
                    partial(save_events, self.spool_dir, self.name, events, first=first)
                )
                if where is not None:
                    saved += len(events)
                    folder = folder or where
        self._record_saved(saved, lost, folder)
        return lost

    def save_unoffered(self, events: Sequence[Event], reason: DropReason) -> None:
        """Events meant for this sink that never reached its buffer (the shutdown deadline came
        while they waited for room): counted and saved (blocking: the host is closing)."""
        if not events:
            return
        self.count_lost(len(events), reason)
        folder = save_events(self.spool_dir, self.name, events)
        self._record_saved(len(events) if folder else 0, len(events), folder)

    def _record_saved(self, saved: int, lost: int, folder: Path | None) -> None:
        if not saved or folder is None:
            return
        self.saved_to = folder
        self.saved += saved
        log.error(
            "sink %r: %d of the %d events it did not get are saved in %s; replay them with: "
            "metricbus replay %s --to ...",
            self.name,
            saved,
            lost,
            folder,
            folder,
        )

    def _release_rows(self) -> None:
        """Move the reducer's finished rows into the buffer: every row when a flush or the close
        wants them, else those whose time window has passed."""
        assert self.reducer is not None
        rows = self.reducer.drain() if self.closing or self._flush_waiters else self.reducer.expired()
        if rows:
            self.buffer.put(rows)

    # ---- the route's task ----

    async def run(self) -> None:
        """Open the sink, write batches until closed and drained, then flush and close it."""
        self.calls.start()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._spool_writer)
                try:
                    await self._serve()
                finally:
                    tg.cancel_scope.cancel()
        finally:
            self._finish()
            self.calls.stop()

    async def _serve(self) -> None:
        try:
            await self._until_written("open", self.sink.open)
            if self.state is not SinkState.DOWN:
                self.state = SinkState.OPEN
            await self._pump()
            await self.calls.attempt("close", self.sink.close, retry=False)
        except Down:  # still down when the bus closed: what it did not get is saved
            self.state = SinkState.FAILED
            await self._lose(DropReason.SINK_DOWN)
            self._log_failure("still down at shutdown")
            with contextlib.suppress(Failed, Down):
                await self.calls.attempt("close", self.sink.close, retry=False)
        except Failed as failed:
            await self._fail()
            if not failed.hung:  # a sink that answers still gets its close, after a failure too
                with contextlib.suppress(Failed, Down):
                    await self.calls.attempt("close", self.sink.close, retry=False)

    async def _spool_writer(self) -> None:
        """Writes the spool's tail to disk when it fills (or when the sink is down or closing),
        on a worker thread: a task of its own, so a sink stuck in a call never holds it up."""
        while True:
            await self._spool_due.wait()
            self._spool_due = anyio.Event()
            await self._write_tail()

    async def _write_tail(self) -> None:
        """Write the tail as segments of `segment_events` (a partial one too: it was asked for)."""
        async with self._spool_lock:
            spool = self.buffer.spool
            while spool.tail:
                tail = spool.detach_tail()
                try:
                    path, size = await anyio.to_thread.run_sync(write_segment, spool.directory, tail)
                except OSError as exc:  # the spool's disk is full too: the tail stays in memory
                    spool.unwritten(tail)
                    log.error("sink %r: its spool %s cannot be written: %r", self.name, spool.directory, exc)
                    return
                spool.written(path, len(tail), size)

    async def _pump(self) -> None:
        config = self.config
        while True:
            if self.reducer is not None:
                self._release_rows()
            await self._keep_spool()
            buf = self.buf
            if not buf:
                if self._flush_waiters:
                    await self._flush_sink()
                elif self.closing and not self.buffer.spool.count:
                    return
                else:
                    await self._wait(1, self._patience())
                continue
            if len(buf) < config.max_batch and not (self.closing or self._flush_waiters or self.buffer.spooled):
                await self._wait(config.max_batch, min(config.max_interval, self._patience()))
                if self.reducer is not None:
                    self._release_rows()
            batch = self.buffer.take(config.max_batch)
            self._unsent = batch
            if self.on_writing is not None:
                self.on_writing(len(batch))
            self._release_space()
            await self._write(batch)

    async def _keep_spool(self) -> None:
        """The spool's disk work, off the loop: have a tail written (by the writer task) while
        the sink is down, read the oldest segment back when the buffer has room for it."""
        spool = self.buffer.spool
        if spool.tail and self.state is SinkState.DOWN:
            self._spool_due.set()
        if len(self.buf) < self.capacity and (oldest := spool.next_file()) is not None:
            try:
                events = await anyio.to_thread.run_sync(load_segment, oldest)
            except OSError as exc:
                log.error("sink %r: its spool segment %s cannot be read: %r", self.name, oldest, exc)
            else:
                spool.loaded(events)
        if self.buffer.spooled:
            self.buffer.refill()
        elif self.state is not SinkState.DOWN:
            self.buffer.spilling = self.config.when_full == "spill"
            self._plain = self.reducer is None and not self.buffer.spilling

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
        """Write a batch: through an outage (it is kept and written again, whole, once the sink
        answers), and if it keeps failing otherwise, split to find the events at fault."""
        worked_before = self.calls.failures_in_a_row == 0 and self.batches > 0
        try:
            refused = await self._until_written("write_batch", self.calls.write_batch, batch)
        except Failed as failed:
            if failed.hung:
                raise
            await self._bisect(batch, worked_before)
            return
        self._settle(len(batch) - refused, refused)

    async def _until_written(self, what: str, call: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """Call the sink (with retries); while it is down, probe it with capped backoff until it
        answers; raise `Down` if it is still down when the bus closes."""
        while True:
            try:
                result = await self.calls.attempt(what, call, *args)
            except Down:
                await self._probe_later()
                continue
            self._up()
            return result

    async def _probe_later(self) -> None:
        """The sink is down: keep what it is sent (spilling it), and wait before the next probe
        (capped backoff). Once the bus is closing, it gets `retry.max_attempts` more probes, then
        `Down` ends the wait."""
        if self.state is not SinkState.DOWN:
            self.state = SinkState.DOWN
            self.down_since = time.time()
            self.buffer.spilling = True
            self._plain = False
            self._release_space()  # publishers waiting on it: it takes everything now
            self._release_flushes()
            log.warning(
                "sink %r is down (%s); its events are kept and it is probed again", self.name, self.calls.last_error
            )
        retry = self.config.retry
        if self.closing:
            self._close_probes += 1
            if self._close_probes > retry.max_attempts:
                raise Down
            await anyio.sleep(retry.delay(self._close_probes))
            return
        self._probes += 1
        deadline = anyio.current_time() + retry.delay(self._probes)
        while not self.closing and anyio.current_time() < deadline:
            await self._keep_spool()  # meanwhile its overflow goes to disk
            with anyio.move_on_after(min(0.05, max(0.0, deadline - anyio.current_time()))):
                self._wakeup = anyio.Event()
                await self._wakeup.wait()
            self._release_flushes()

    def _up(self) -> None:
        if self.state is SinkState.DOWN:
            log.warning(
                "sink %r is back after %.1f s down; catching up", self.name, time.time() - (self.down_since or 0)
            )
            self.state = SinkState.OPEN
            self.down_since = None
        self._probes = self._close_probes = 0

    async def _bisect(self, batch: list[Event], worked_before: bool) -> None:
        """Write `batch` in halves, recursively, one attempt per part (the whole batch had its
        retries), so a poison event costs itself alone. An event that fails on its own is
        rejected if the sink is seen to work (before this batch, or on another part of it);
        otherwise, or after too many failures in a row, the sink itself is broken and fails.
        A part that finds the sink down waits for it, whole, like any batch."""
        written = refused = 0
        hung = False
        failed_alone: list[tuple[Event, str]] = []
        pending = [batch[len(batch) // 2 :], batch[: len(batch) // 2]] if len(batch) > 1 else []
        if len(batch) == 1:
            failed_alone.append((batch[0], self.calls.last_error or ""))
        while pending:
            part = pending.pop()
            try:
                refused_here = await self._attempt_once_or_down("write_batch", self.calls.write_batch, part)
            except Failed as failed:
                if failed.hung or self.calls.failures_in_a_row > self._fail_limit:
                    hung = failed.hung
                    pending.append(part)
                    break
                if len(part) > 1:
                    pending += [part[len(part) // 2 :], part[: len(part) // 2]]
                else:
                    failed_alone.append((part[0], self.calls.last_error or ""))
                continue
            written += len(part) - refused_here
            refused += refused_here
        works = worked_before or written + refused > 0
        if pending or not works:  # the sink is broken: the unwritten rest is its failure
            self.delivered += written
            if refused:
                self._drop(DropReason.REJECTED, refused)
            self._unsent = [e for e, _ in failed_alone] + [e for part in reversed(pending) for e in part]
            raise Failed(hung=hung)
        for _, error in failed_alone:
            log.error("sink %r: rejected an event that fails on its own: %s", self.name, error)
        self._settle(written, refused + len(failed_alone))

    async def _attempt_once_or_down(self, what: str, call: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        while True:
            try:
                return await self.calls.attempt(what, call, *args, retry=False)
            except Down:
                await self._probe_later()

    def _settle(self, written: int, rejected: int) -> None:
        self.delivered += written
        if rejected:
            self._drop(DropReason.REJECTED, rejected)
        self.batches += 1
        self._unsent = []
        if self.on_settled is not None:
            self.on_settled()

    async def _flush_sink(self) -> None:
        self._flushing, self._flush_waiters = self._flush_waiters, []
        try:
            await self._until_written("flush", self.sink.flush)
        finally:
            for waiter in self._flushing:
                waiter.set()
            self._flushing = []

    async def _fail(self) -> None:
        self.state = SinkState.FAILED
        self.accepting = False
        self._plain = False  # what is offered from now on is counted as lost
        self._release_space()
        self._release_flushes()
        await self._lose(DropReason.SINK_FAILED)
        self._log_failure("failed")

    def _log_failure(self, what: str) -> None:
        log.error("sink %r %s: %s", self.name, what, self.calls.last_error)

    def _finish(self) -> None:
        self.accepting = False
        if self.state is not SinkState.FAILED:
            self.state = SinkState.CLOSED
        self._release_space()
        self._release_flushes()
        self.done.set()
