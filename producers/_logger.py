"""MetricLogger: the synchronous front door for an ordinary training loop.

The training process only appends. A logging call checks its arguments (cheap type checks; a
bad value is an `InvalidEvent` here, at the call) and appends a tuple to a deque: no event
object, no lock, no syscall. Every `poll_interval` the calling thread itself ships what it
appended: one msgspec encode of the whole batch and one non-blocking write per sink host, so
delivery never depends on a background thread of this process winning the GIL. The sinks run in
sink host processes (`bus` places each sink, see `Sink.isolation`); only the sinks that cannot
move, and producer tasks, run in this process (`LocalBus`). One background thread (the pump)
reads the hosts' replies, finishes writes a full pipe held back, resolves GPU tensors, and ships
for a loop that stopped logging.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from itertools import repeat, starmap
from types import TracebackType
from typing import Any

import msgspec

from bus import (
    DEFAULT_ORIGIN,
    EVENT_TYPES,
    BusClosed,
    BusStateError,
    Context,
    DeliveryError,
    DropReason,
    Event,
    Histogram,
    Hparams,
    InvalidConfig,
    InvalidEvent,
    Metrics,
    Origin,
    RankReduce,
    RankStats,
    Scalar,
    Sink,
    SinkAlreadyAdded,
    SinkConfig,
    SinkStats,
    StopTraining,
    Text,
    accepted_share,
    check_delivery,
    sink_config,
    wire,
)
from bus.hosts import HostLink, Job, JobLink, Pump, claim_sink, job_from_env, place, release_sink

from . import _signals as signals
from ._frequency import LogFrequency
from ._hot_path import ScalarCall, ScalarsCall, hot_calls
from ._local_bus import LocalBus
from ._signals import critical
from ._tensor_values import Unresolved, is_tensor, tensor_value

__all__ = ["MetricLogger"]

log = logging.getLogger("metricbus")

_MAX_STEP = 2**63 - 1
_FLOAT = frozenset((float,))
_EVENT_KINDS = frozenset(EVENT_TYPES)
_time = time.time
_NEVER = float("inf")


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
    """Log from synchronous code; the sinks run in sink host processes.

        with MetricLogger(sinks=[CsvSink("runs/exp1/metrics.csv")]) as log:
            for step in range(n):
                log.scalars({"loss": loss, "lr": lr}, step=step)   # returns at once

    `sinks` are added with default settings; use `add_sink(sink, when_full=..., ...)` for others.
    Each sink runs where its `isolation` says (the shared sink host, a host of its own, or this
    process); `add_sink(isolate=...)` overrides it and `stats()[name].where` tells.
    `log_freq` (an int N, "batch", "epoch" or a `LogFrequency`) skips calls before anything is
    built; `hparams` and `publish` are never skipped.
    What was logged is shipped every `poll_interval` seconds, by the logging call itself (or by
    the pump thread when the loop stops logging): a kill -9 of this process loses at most that.
    When `pending_limit` events wait because the hosts are behind (a full `block` sink, a frozen
    host), logging waits up to `block_timeout` seconds (every logging thread with it); past that
    it goes on, and what the hosts cannot take yet waits in each host's outbox (memory, then
    disk) until they take it, or is saved with its replay command if they never do. With only
    drop-policy sinks logging never waits; the overflow is dropped and counted as "full".
    A script that ends without `close()` (or `with`), by an exception, `sys.exit`, SIGTERM or
    Ctrl-C still drains: an exit hook closes every open logger, and reports on stderr what could
    not be delivered. The sink hosts outlive a crash of this process and write what they got.

    A rank of a job (`job`: None finds it in the launcher's environment, torchrun's RANK,
    WORLD_SIZE and TORCHELASTIC_RUN_ID or MASTER_ADDR/MASTER_PORT; a name; False: never) sends
    its sinks to the job's one host on this machine, which every rank of the job shares; its
    events carry its rank. `ranks` is the cross-rank reduction that host runs (a `RankReduce`, or
    its settings as a dict; default: the mean of every metric over WORLD_SIZE ranks when they all
    run on this machine; False: none).
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
        poll_interval: float = 0.02,
        use_uvloop: bool | None = None,
        handle_sigterm: bool = True,
        log_freq: int | str | LogFrequency | None = None,
        job: str | bool | None = None,
        ranks: RankReduce | Mapping[str, Any] | bool | None = None,
    ) -> None:
        if pending_limit < 1 or block_timeout <= 0 or poll_interval <= 0 or shutdown_timeout <= 0:
            raise InvalidConfig("pending_limit, block_timeout, poll_interval and shutdown_timeout must be positive")
        if type(origin) is not Origin:
            raise InvalidEvent("origin", origin, "must be an Origin")
        if context is not None and type(context) is not Context:
            raise InvalidEvent("context", context, "must be a Context or None")
        self._job = job_from_env(job)
        self._ranks = _rank_settings(self._job, ranks)
        if self._job is not None:
            origin = _job_origin(self._job, origin)
        # First: a signal that comes while the hosts start must already go through the drain.
        signals.install(sigterm=handle_sigterm)
        self.shutdown_timeout = shutdown_timeout
        self.raise_on_loss = raise_on_loss
        self.pending_limit = pending_limit
        self.block_timeout = block_timeout
        self.poll_interval = poll_interval
        self._backend = _backend_options(use_uvloop)
        self._freq = None if log_freq is None else LogFrequency.parse(log_freq)  # type: ignore[arg-type]
        self._scope: wire.Scope = (origin, context)
        self._pid = os.getpid()
        # the hot path's state: rows appended by any thread; shipped under _ship_lock
        self._pending: deque[Any] = deque()
        self._due_at = [_time() + poll_interval]  # when the next batch ships; -inf: every call checks in
        self._ship_lock = threading.RLock()
        self._resolving: deque[Unresolved] = deque()  # batches waiting for tensor values, in order
        self._closed = False
        self._stop_reason: str | None = None
        self._overflowing = False  # waited block_timeout once: no more waiting until the hosts catch up
        self._congested = False  # a thread waits for the hosts: the others wait for it (the ship lock)
        self._lost: dict[tuple[type[Event], DropReason], int] = {}  # dropped before any sink
        self._waits = False  # some sink is 'block': a full pipeline makes logging wait (block_timeout)
        self._keeps = False  # some sink is 'block' or 'spill': what the hosts cannot take yet waits on disk
        self._closing = False
        # where the sinks run
        self._pump = Pump(poll_interval)
        self._pump.ticks.append(self._tick)
        self._links: dict[str, HostLink] = {}  # "" for the shared host, else the sink's own
        self._placed: dict[str, HostLink | None] = {}  # sink name -> its host (None: this process)
        self._accepts: dict[str, frozenset[type[Event]] | None] = {}
        self._sinks: list[Sink] = []  # claimed: one sink object feeds one logger at a time
        self._local: LocalBus | None = None
        self._final: Mapping[str, SinkStats] | None = None
        self._error: BaseException | None = None
        self.scalar, self.scalars = hot_calls(self, self._pending, self._due_at, self._freq)
        _open_loggers.add(self)
        try:
            for sink in sinks:
                self.add_sink(sink)
        except BaseException:
            self._abort()
            raise

    # ---- the training thread's hot path: `scalar` and `scalars` (see _hot_path.py) ----

    scalar: ScalarCall
    scalars: ScalarsCall

    def _scalar_slow(self, name: object, value: object, step: object, wall_time: float | None) -> None:
        """`scalar` for what its fast path does not take: new names, ints, numpy values, tensors,
        an explicit wall time; and any call once the logger is closed or asked to stop."""
        if is_tensor(value):
            checked = Scalar(name, 0.0, step, wall_time=_now(wall_time))  # type: ignore[arg-type]
            row: tuple[Any, ...] = (checked.name, tensor_value(value, "value"), checked.step, checked.wall_time)
        else:
            event = Scalar(name, value, step, wall_time=_now(wall_time))  # type: ignore[arg-type]
            row = (event.name, event.value, event.step, event.wall_time)
        self._pending.append(row)
        self._due(row[3])

    def _scalars_slow(self, values: object, step: object, wall_time: float | None) -> None:
        tensors: dict[str, Any] = {}
        if isinstance(values, Mapping):
            tensors = {k: v for k, v in values.items() if is_tensor(v)}
            if tensors:
                values = {k: 0.0 if k in tensors else v for k, v in values.items()}
        event = Metrics(values, step, wall_time=_now(wall_time))  # type: ignore[arg-type]
        checked = dict(event.values)
        for key, value in tensors.items():
            checked[key] = tensor_value(value, f"values[{key!r}]")
        self._pending.append([checked, event.step, event.wall_time])
        self._due(event.wall_time)

    # ---- the other calls (validated as events, shipped whole) ----

    def histogram(self, name: str, values: Any, step: int, *, epoch_end: bool = False) -> None:
        """Log a distribution (list, numpy array or tensor); sinks bin it off this thread."""
        if self._freq is not None and not self._freq(step, epoch_end=epoch_end):
            return
        self.publish(Histogram(name, step, values=values, origin=self.origin, context=self.context))

    def text(self, name: str, text: str, step: int, *, epoch_end: bool = False) -> None:
        """Log a piece of text."""
        if self._freq is not None and not self._freq(step, epoch_end=epoch_end):
            return
        self.publish(Text(name, text, step, origin=self.origin, context=self.context))

    def hparams(self, params: Mapping[str, Any], metrics: Mapping[str, float] | None = None) -> None:
        """Log the run's hyperparameters (and, optionally, the metrics they produced)."""
        self.publish(Hparams(dict(params), dict(metrics or {}), origin=self.origin, context=self.context))

    def publish(self, event: Event) -> None:
        """Log a ready-made event as is (its own origin and context are kept)."""
        if type(event) not in _EVENT_KINDS:
            raise InvalidEvent("event", event, "must be a metricbus event (Scalar, Metrics, Histogram, ...)")
        self._pending.append(event)
        self._due(_time())

    # ---- shipping ----

    def _due(self, now: float) -> None:
        """Ship what is pending (the calling thread does it itself), or raise what the logger has
        to say: closed, a forked child, a stop requested."""
        if self._closed:
            self._pending.clear()
            self._raise_closed()
        if not self._ship_lock.acquire(blocking=self._congested):
            return  # another thread is shipping right now: it takes this one along
        try:
            self._ship()
            self._due_at[0] = now + self.poll_interval if self._stop_reason is None else -_NEVER
            if self._held() > self.pending_limit:
                self._make_room()
        finally:
            self._ship_lock.release()
        if self._stop_reason is not None:
            self._raise_stop()

    def _ship(self) -> None:
        """Encode everything pending once and send it to every host (lock held). A signal cannot
        cut it between taking the batch and handing it over (see _signals.py)."""
        pending = self._pending
        n = len(pending)
        if not n:
            return
        with critical():
            items = list(starmap(pending.popleft, repeat((), n)))
            if self._overflowing and not self._keeps and self._held() > self.pending_limit:
                self._count_lost(items, DropReason.FULL)  # every sink's policy says drop
                return
            if self._resolving:  # a batch ahead of it waits for tensor values: keep the order
                self._resolving.append(Unresolved(self._scope, items))
                return
            try:
                body = wire.encode((self._scope,), items)
            except TypeError:  # tensors in it: the pump reads them, off this thread, then sends
                self._resolving.append(Unresolved(self._scope, items))
                self._pump.wake()
                return
            self._send(body, items)

    def _send(self, body: bytes, items: Sequence[Any]) -> None:
        for link in self._links.values():
            link.send_batch(body, items)
        if self._local is not None:
            self._local.post(body, items)

    def _tick(self) -> None:
        """The pump's turn: resolve tensor batches, and ship for a loop that went quiet."""
        if self._pid != os.getpid() or not self._ship_lock.acquire(blocking=False):
            return  # the training thread is shipping (or waiting for room) itself
        try:
            self._resolve()
            if self._pending and _time() >= self._due_at[0] and not self._closed:
                self._ship()
                self._due_at[0] = _time() + self.poll_interval if self._stop_reason is None else -_NEVER
        finally:
            self._ship_lock.release()

    def _resolve(self) -> None:
        """Send the batches whose tensor values have landed, in order (the pump, lock held)."""
        while self._resolving:
            head = self._resolving[0]
            items = head.values()
            if items is None:
                return
            with critical():
                self._resolving.popleft()
                self._send(wire.encode((head.scope,), items), items)

    def _wait_resolved(self, deadline: float | None) -> bool:
        """Wait (without the lock) until the pump has sent every batch with tensors; False if
        `deadline` (time.monotonic()) came first."""
        while self._resolving:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            self._pump.wake()
            time.sleep(0.0005)
        return True

    def _held(self) -> int:
        """Events logged and not yet taken by a host's pipe (nor by the local bus)."""
        held = len(self._pending) + sum(len(batch.items) for batch in self._resolving)
        return (
            held
            + sum(link.backlog_events for link in self._links.values())
            + (self._local.backlog if self._local is not None else 0)
        )

    def _make_room(self) -> None:
        """The hosts are behind (lock held). If some sink is 'block', wait for them, up to
        `block_timeout`, while the other logging threads wait for this one. Past that, or with no
        'block' sink: if some sink is lossless ('block' or 'spill'), logging goes on and what the
        hosts cannot take yet waits on disk (each host's outbox spills past its memory limit);
        if every sink's policy is a drop, what does not fit is dropped and counted ("full")."""
        if not self._waits or self._overflowing:
            self._overflowing = True
            return
        deadline = time.monotonic() + self.block_timeout
        self._congested = True
        try:
            while self._held() > self.pending_limit:
                if time.monotonic() >= deadline:
                    log.error(
                        "metricbus: a sink host kept the logger full for %ss; logging goes on, and what the "
                        "hosts cannot take yet waits on disk; see log.stats()",
                        self.block_timeout,
                    )
                    self._overflowing = True
                    return
                self._ship()  # what the other threads appended meanwhile joins the queue, in order
                self._pump.wake()
                time.sleep(0.001)
            self._overflowing = False
        finally:
            self._congested = False

    def _count_lost(self, items: Iterable[Any], reason: DropReason) -> None:
        for kind, n in wire.item_kinds(items).items():
            self._lost[kind, reason] = self._lost.get((kind, reason), 0) + n

    @property
    def dropped_before_bus(self) -> int:
        """Events dropped because the logger was full; also counted in every sink's stats."""
        return sum(self._lost.values())

    # ---- origin and context ----

    @property
    def origin(self) -> Origin:
        """The origin of every event this logger builds."""
        return self._scope[0]

    @origin.setter
    def origin(self, origin: Origin) -> None:
        if type(origin) is not Origin:
            raise InvalidEvent("origin", origin, "must be an Origin")
        self._set_scope((origin, self._scope[1]))

    @property
    def context(self) -> Context | None:
        """The context of every event this logger builds from now on (e.g. the current epoch)."""
        return self._scope[1]

    @context.setter
    def context(self, context: Context | None) -> None:
        if context is not None and type(context) is not Context:
            raise InvalidEvent("context", context, "must be a Context or None")
        self._set_scope((self._scope[0], context))

    def _set_scope(self, scope: wire.Scope) -> None:
        """What was logged before keeps the scope it was logged in: ship it first."""
        with self._ship_lock:
            if not self._closed:
                self._ship()
            self._scope = scope

    # ---- stopping the loop ----

    def request_stop(self, reason: str) -> None:
        """Ask the training loop to stop: the next logging call raises `StopTraining(reason)`
        (after the event it carries has been queued). Safe to call from any thread."""
        if self._stop_reason is None:
            self._stop_reason = reason
            self._due_at[0] = -_NEVER

    def _raise_stop(self) -> None:
        reason, self._stop_reason = self._stop_reason, None
        if reason is not None:
            self._due_at[0] = _time() + self.poll_interval
            raise StopTraining(reason)

    def _raise_closed(self) -> None:
        if self._pid != os.getpid():
            raise BusStateError(
                f"this MetricLogger belongs to process {self._pid}; a forked child cannot log through it "
                "(its sink hosts and threads belong to the parent): create a MetricLogger in the child"
            )
        raise BusClosed("this MetricLogger is closed")

    # ---- sinks and producers ----

    def add_sink(self, sink: Sink, *, isolate: str | None = None, **options: Any) -> str:
        """Attach a sink (from now on); `options` as for `MetricBus.add_sink`. `isolate`: where it
        runs ("none": this process, "host": the shared sink host, "process": a host of its own);
        default: the sink's own `isolation`, or this process if it cannot move."""
        if self._closed:
            self._raise_closed()
        if not isinstance(sink, Sink):
            raise InvalidConfig(f"expected a Sink, got {type(sink).__name__}")
        where, why = place(sink, isolate, default=sink.isolation)
        if why is not None:
            log.info("metricbus: sink %s runs in the training process: %s", sink.name, why)
        config = _config(sink, options)
        name = options.get("name") or sink.name
        if name in self._placed:
            raise SinkAlreadyAdded(f"a sink named {name!r} is already on this logger; pass name=... to add_sink")
        if where != "none":  # the local bus claims its own; a job's host locks the files of the job's sinks
            claim_sink(sink, self, lock_files=self._job is None)
            self._sinks.append(sink)
        with self._ship_lock:
            self._ship()  # what was logged before it is not its to get
            if where == "none":
                local = self._local_bus()
                name = local.call(lambda: local.bus.add_sink(sink, name=name, config=config, isolate="none"))
                self._placed[name] = None
            else:
                key = _JOB if self._job is not None else "" if where == "host" else name
                link = self._links.get(key)
                if link is None and self._job is not None:
                    link = self._links[key] = JobLink(
                        self._job,
                        self._pump,
                        shutdown_timeout=self.shutdown_timeout,
                        ranks=self._ranks,
                        site=self.origin.site,
                    )
                elif link is None:
                    label = "shared" if key == "" else "own"
                    link = self._links[key] = HostLink(label, self._pump, shutdown_timeout=self.shutdown_timeout)
                link.add_sink(name, sink, config)
                self._placed[name] = link
            self._accepts[name] = None if sink.accepts is None else frozenset(sink.accepts)
            self._waits = self._waits or config.when_full == "block"
            self._keeps = self._keeps or config.when_full in ("block", "spill")
        return name

    def _local_bus(self) -> LocalBus:
        if self._local is None:
            self._local = LocalBus(
                shutdown_timeout=self.shutdown_timeout, poll_interval=self.poll_interval, backend_options=self._backend
            )
        return self._local

    def add_producer(self, fn: Callable[[Any], Awaitable[None]]) -> None:
        """Run `async fn(bus)` in this process until close (a sampler, a Redis source); what it
        publishes on `bus` is logged like everything else (see `bus`)."""
        if self._closed:
            self._raise_closed()
        self._local_bus().add_producer(fn, self.bus)

    @property
    def bus(self) -> LoggerBus:
        """This logger as a producer task sees it: async publish, flush and stats."""
        return LoggerBus(self)

    @property
    def sink_names(self) -> list[str]:
        return list(self._placed)

    @property
    def job(self) -> Job | None:
        """The job this process is a rank of (None: a process on its own)."""
        return self._job

    @property
    def rank_stats(self) -> RankStats | None:
        """The job host's cross-rank reduction, as of its last report: steps written, and the
        ranks missing from some (`bus.missing_lines`); None without a job's reduction."""
        link = self._links.get(_JOB)
        return link.rank_stats if isinstance(link, JobLink) else None

    # ---- flush, stats, close ----

    def flush(self, timeout: float | None = None) -> None:
        """Block until everything logged so far is written by every sink; `TimeoutError` after
        `timeout` seconds (a hung sink is failed at its `call_timeout` in any case)."""
        if self._closed:
            self._raise_closed()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._ship_lock:
            self._ship()
        if not self._wait_resolved(deadline):
            raise TimeoutError(f"tensor values were not read within {timeout}s")
        for link in list(self._links.values()):
            if not link.flush(_left(deadline)):
                raise TimeoutError(f"the sink host {link.label} did not flush within {timeout}s")
        if self._local is not None:
            self._local.flush(_left(deadline))

    def stats(self) -> Mapping[str, SinkStats]:
        """Per-sink counters, everything logged so far included (what is still in this process
        counts as queued), so that they always balance; never waits. After `close()`, the final
        counters."""
        if self._final is not None:
            return self._final
        with self._ship_lock:
            held = wire.item_kinds([*self._pending, *(item for batch in self._resolving for item in batch.items)])
            lost = dict(self._lost)
        stats: dict[str, SinkStats] = {}
        for link in list(self._links.values()):
            stats.update(link.stats())
        if self._local is not None:
            stats.update(self._local.stats())
        return {name: _with_logger(stats[name], held, lost, name, self) for name in self._placed if name in stats}

    def close(self) -> None:
        """Ship what is left, have every sink deliver it (within `shutdown_timeout`) and close.
        Raises `DeliveryError` if some sink failed or lost events."""
        if self._pid != os.getpid():
            return  # a forked child's copy: the parent drains it
        if not self._closing:
            self._shut_down()
        _open_loggers.discard(self)
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _shut_down(self) -> None:
        """The drain. A signal that comes meanwhile (our handlers) waits until it is done: the
        drain is never cut short, and SIGTERM or Ctrl-C then ends the program as usual."""
        self._closing = True
        try:
            with critical():
                self._drain()
        finally:
            signals.uninstall()

    def _drain(self) -> None:
        deadline = time.monotonic() + self.shutdown_timeout
        with self._ship_lock:
            self._ship()
            self._closed = True
            self._due_at[0] = -_NEVER
        self._wait_resolved(deadline)
        with self._ship_lock:
            unsent = [item for batch in self._resolving for item in batch.items]
            self._resolving.clear()
        for link in self._links.values():
            link.begin_close()
        final: dict[str, SinkStats] = {}
        if self._local is not None:
            final.update(self._local.close(_left(deadline) or 0.0))
            if self._local.error is not None:
                self._error = self._local.error
        for link in self._links.values():
            final.update(link.finish_close(_left(deadline) or 0.0))
        self._pump.stop()
        for sink in self._sinks:
            release_sink(sink, self)
        if unsent:
            self._count_lost(unsent, DropReason.SHUTDOWN_TIMEOUT)
        lost = dict(self._lost)
        self._final = {name: _with_logger(final[name], {}, lost, name, self) for name in self._placed if name in final}
        if self.raise_on_loss and self._error is None:
            try:
                check_delivery(self._final)
            except DeliveryError as exc:
                self._error = exc

    def _abort(self) -> None:
        """The constructor failed: stop what it started."""
        signals.uninstall()
        self._closed = True
        for link in self._links.values():
            link.begin_close()
            link.finish_close(1.0)
        if self._local is not None:
            self._local.close(1.0)
        self._pump.stop()
        for sink in self._sinks:
            release_sink(sink, self)
        _open_loggers.discard(self)

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

    def _forget(self) -> None:
        """In a forked child: the hosts and threads are the parent's."""
        self._closed = True
        self._due_at[0] = -_NEVER
        self._pending.clear()
        self._resolving.clear()
        for link in self._links.values():
            link.forget()
        self._pump.forget()


class LoggerBus:
    """A MetricLogger as a producer task sees it (`add_producer(fn)` calls `fn(this)`): what
    it publishes is logged like any other event."""

    def __init__(self, logger: MetricLogger) -> None:
        self._logger = logger

    async def publish(self, event: Event) -> None:
        self._logger.publish(event)

    def publish_nowait(self, event: Event) -> None:
        self._logger.publish(event)

    async def publish_many(self, events: Sequence[Event]) -> None:
        for event in events:
            self._logger.publish(event)

    async def flush(self, timeout: float | None = None) -> None:
        import anyio

        await anyio.to_thread.run_sync(self._logger.flush, timeout)

    def stats(self) -> Mapping[str, SinkStats]:
        return self._logger.stats()

    @property
    def sink_names(self) -> list[str]:
        return self._logger.sink_names


_JOB = "\0job"  # the key of the job's host among the links (never a sink's name)


def _rank_settings(job: Job | None, ranks: RankReduce | Mapping[str, Any] | bool | None) -> RankReduce | None:
    """The reduction the job's host runs, from `MetricLogger(ranks=...)` (checked here)."""
    if ranks is False:
        return None
    if job is None:
        if ranks is None:
            return None
        raise InvalidConfig("ranks= reduces the ranks of a job, and this process is not a rank of one (see job=)")
    if ranks is None:
        # ranks on other machines are not this host's to wait for: reduce at `metricbus aggregate`
        return RankReduce(world_size=job.world_size) if job.one_machine else None
    if ranks is True:
        return RankReduce(world_size=job.world_size)
    if isinstance(ranks, Mapping):
        try:
            return RankReduce(**{"world_size": job.world_size, **ranks})
        except TypeError as exc:
            raise InvalidConfig(f"ranks: {exc}") from None
    if not isinstance(ranks, RankReduce):
        raise InvalidConfig(f"ranks must be a RankReduce, a dict of its settings, True or False; got {ranks!r}")
    return ranks


def _job_origin(job: Job, origin: Origin) -> Origin:
    """A rank's origin: its rank (and, in a job on many machines, its node as torchrun numbers it)."""
    if origin.rank is None:
        origin = msgspec.structs.replace(origin, rank=job.rank)
    group = os.environ.get("GROUP_RANK")
    if not job.one_machine and not origin.node and group is not None and group.isdigit():
        origin = msgspec.structs.replace(origin, node=f"node{group}")
    return origin


def _config(sink: Sink, options: Mapping[str, Any]) -> SinkConfig:
    """The SinkConfig of `add_sink(**options)`, as MetricBus.add_sink builds it."""
    return sink_config(sink.rate, **{k: v for k, v in options.items() if k != "name"})


def _with_logger(
    stats: SinkStats,
    held: Mapping[type[Event], int],
    lost: Mapping[tuple[type[Event], DropReason], int],
    name: str,
    logger: MetricLogger,
) -> SinkStats:
    """A sink's counters with what the logger holds for it (queued) and dropped before it."""
    accepts = logger._accepts.get(name)
    queued = accepted_share(held, accepts)
    dropped = dict(stats.dropped)
    for (kind, reason), n in lost.items():
        share = accepted_share({kind: n}, accepts)
        if share:
            dropped[reason.value] = dropped.get(reason.value, 0) + share
    extra = queued + sum(dropped.values()) - sum(stats.dropped.values())
    if not extra:
        return stats
    return msgspec.structs.replace(
        stats, published=stats.published + extra, queued=stats.queued + queued, dropped=dropped
    )


def _now(wall_time: float | None) -> float:
    return _time() if wall_time is None else wall_time


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


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
            from ._stats_table import format_stats  # rich: imported only when there is a table to show

            print(f"metricbus: at exit, {exc}\n{format_stats(exc.stats)}", file=sys.stderr, flush=True)
        except Exception as exc:
            print(f"metricbus: at exit, closing a MetricLogger failed: {exc!r}", file=sys.stderr, flush=True)


def _forget_after_fork() -> None:
    """In a forked child the hosts and threads are the parent's: loggers there refuse use
    instead of hanging, and hold none of the parent's pipes open."""
    for logger in list(_open_loggers):
        logger._forget()
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
