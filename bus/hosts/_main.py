"""The sink host: the process that runs a training process's sinks (`bus.hosts._main`).

The training process only appends and ships encoded batches (`bus.wire` frames on this
process's stdin); everything else of the pipeline runs here, on this process's own GIL: decoding,
the routes (buffers, batching, when-full policies, retries, spool) and the sinks themselves. The
host answers on stdout: ACK when every sink has settled a batch (so the trainer may forget it),
a SNAPSHOT of the sinks' stats every tick, and the replies to FLUSH and CLOSE.

It outlives its trainer: when the trainer dies (stdin ends, or the parent process is gone) it
delivers everything it received, closes every sink and exits. It runs in a session of its own,
so that signals meant for the trainer's process group (Ctrl-C in a terminal, a Jupyter kernel
terminating its children at shutdown) do not reach it, and it ignores SIGINT and SIGTERM sent to
it directly (a scheduler signalling every process of a job): the trainer drains and closes it. A
byte on the control pipe means "the trainer is closing": the shutdown clock starts even while the
host is blocked behind a full sink.

After a crash of the host, the trainer starts a new one with `resume` and sends again every batch
not acknowledged. After every batch a sink writes, and each tick, the host writes, per sink, how
far it has settled (`Progress`); the new host skips what the old one settled. A batch a sink
wrote that the host had not recorded yet when it was killed is sent again: a file sink that
keeps an output mark (CSV's long layout, JSONL) is first cut back to where the record says its
file ended, so it holds that batch once; any other sink may hold it twice (at least once).
"""

from __future__ import annotations

import errno
import gc
import logging
import os
import pickle
import shutil
import signal
import sys
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import msgspec

from .. import wire
from .._bus import MetricBus
from .._errors import InvalidEvent
from .._events import EVENT_TYPES, Event
from .._route import Route
from .._sink import Sink
from .._stats import DropReason
from ..wire import Op
from ._messages import Hello, SinkSpec
from ._output_mark import current_mark, resume_output
from ._progress import Counts, Progress

log = logging.getLogger("metricbus")

TICK = 0.05  # seconds between acks and stats snapshots (measured: waking the trainer every 10 ms
# cost a GIL-holding step +3% more on a 2-core machine; replies to FLUSH and CLOSE never wait)


class _Replies:
    """Frames to the trainer, written without ever blocking the host: a snapshot that cannot be
    written yet is replaced by the next one; acks and replies wait their turn."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.queue: deque[bytes] = deque()
        self.snapshot: bytes | None = None
        self.gone = False  # the trainer closed its end

    def send(self, op: Op, seq: int, body: bytes = b"") -> None:
        self.queue.append(wire.frame(op, seq, body))
        self.write()

    def send_snapshot(self, body: bytes) -> None:
        self.snapshot = wire.frame(Op.SNAPSHOT, 0, body)
        self.write()

    def write(self) -> bool:
        """Write what the pipe takes now; True when nothing is left."""
        if self.snapshot is not None and not self.queue:
            self.queue.append(self.snapshot)
            self.snapshot = None
        while self.queue and not self.gone:
            data = self.queue[0]
            try:
                n = os.write(self.fd, data)
            except BlockingIOError:
                return False
            except OSError:  # EPIPE: the trainer is gone; nobody reads replies any more
                self.gone = True
                break
            if n < len(data):
                self.queue[0] = data[n:]
                return False
            self.queue.popleft()
        if self.gone:
            self.queue.clear()
        return True

    async def drain(self, within: float) -> None:
        """Write what is queued, waiting for the pipe up to `within` seconds."""
        with anyio.move_on_after(within):
            while not self.write():
                await anyio.wait_writable(self.fd)


class Host:
    """One sink host: reads frames, runs a MetricBus, replies."""

    def __init__(self, hello: Hello, fd_in: int, fd_out: int) -> None:
        self.hello = hello
        self.fd_in = fd_in
        self.replies = _Replies(fd_out)
        # the trainer holds its sinks' file locks: its `add_sink` took them
        self.bus = MetricBus(shutdown_timeout=hello.shutdown_timeout, raise_on_loss=False, lock_files=False)
        self.progress = Progress(Path(hello.state_dir))
        self.resumed: dict[str, Counts] = self.progress.read() if hello.resume else {}
        self.received = 0  # the last batch received and handed to the routes
        self.acked = 0
        # (seq, each route's `published` right after that batch), oldest first, until acked
        self.marks: deque[tuple[int, dict[str, int]]] = deque()
        # each route's (last batch settled, its `published` then), as of the last ack
        self.base: dict[str, tuple[int, int]] = {}
        # each route's output mark as last recorded (kept while its sink writes or is not open)
        self.output_marks: dict[str, int | None] = {}
        self.closing = anyio.Event()
        self.deadline = float("inf")
        self.close_request: int | None = None
        self._buffer = bytearray()
        self._reading = anyio.CancelScope()

    # ---- frames from the trainer ----

    async def serve(self) -> None:
        await self.bus.__aenter__()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._tick)
                tg.start_soon(self._watch_control)
                tg.start_soon(self._enforce_deadline)
                if self.hello.closing:
                    self._start_closing()
                try:
                    with self._reading:
                        await self._read_until_closed()
                finally:
                    tg.cancel_scope.cancel()
        finally:
            await self._close()

    async def _read_until_closed(self) -> None:
        """Handle frames until CLOSE, the end of stdin, or the trainer's death."""
        while self.close_request is None:
            data = await self._read()
            if not data:
                return
            self._buffer += data
            await self._handle_frames()

    async def _read(self) -> bytes:
        while True:
            try:
                return os.read(self.fd_in, 1 << 20)
            except BlockingIOError:
                if self._parent_gone():  # nothing more can come: what was sent is all read
                    return b""
                with anyio.move_on_after(0.2):
                    await anyio.wait_readable(self.fd_in)

    async def _handle_frames(self) -> None:
        consumed = 0
        try:
            for op, seq, body in wire.iter_frames(self._buffer):
                match op:
                    case Op.BATCH:
                        await self._batch(seq, body)
                    case Op.SINK:
                        self._add_sink(seq, msgspec.msgpack.decode(body, type=SinkSpec))
                    case Op.FLUSH:
                        await self.bus.flush()
                        self.replies.send(Op.FLUSHED, seq, self._stats_body())
                    case Op.CLOSE:
                        self.close_request = seq
                        self._start_closing()
                    case _:
                        log.error("sink host: unknown frame op %r ignored", op)
                consumed += wire.HEADER.size + len(body)
                if self.close_request is not None:
                    break
        finally:
            del self._buffer[:consumed]

    def _add_sink(self, index: int, spec: SinkSpec) -> None:
        try:
            sink = pickle.loads(spec.sink)
        except Exception as exc:  # its route fails it at open, and counts what it does not get
            log.error("sink host: cannot load sink %r: %r", spec.name, exc)
            sink = _Unloadable(spec, f"cannot be loaded in the sink host: {type(exc).__name__}: {exc}")
        previous = self.resumed.get(spec.name)
        if previous is not None:  # what the dead host wrote after its last record is cut off: sent again
            resume_output(sink, previous.mark)
            self.output_marks[spec.name] = previous.mark
        self.bus.add_sink(sink, name=spec.name, config=spec.config, isolate="none")
        route = self.bus._routes[-1]
        route.on_settled = self._record_progress
        if previous is not None:  # carry the dead host's counters on: the stats stay whole
            route.delivered, route.dropped = previous.delivered, dict(previous.dropped)
            if route.reducer is not None:
                route.reducer.reduced = previous.reduced
            route.published = _settled(route)
            self.base[route.name] = (previous.done, route.published - previous.partial)
        else:
            self.base[route.name] = (self.received, 0)

    async def _batch(self, seq: int, body: bytes) -> None:
        if seq <= self.received:
            return  # sent again after a reconnect: already here
        try:
            events = wire.decode(body)
        except InvalidEvent as exc:  # never from our trainer; a corrupt frame is reported, not fatal
            log.error("sink host: batch %d cannot be read and is skipped: %s", seq, exc)
            self.received = seq
            return
        routes = self.bus._routes
        for i, route in enumerate(routes):
            share = _accepted(events, route)[self._settled_before(route.name, seq) :]
            try:
                await self._offer(route, share)
            except BaseException:  # the shutdown deadline: what this batch did not offer is saved
                self.received = seq
                route.save_unoffered(share, DropReason.SHUTDOWN_TIMEOUT)
                for later in routes[i + 1 :]:
                    rest = _accepted(events, later)[self._settled_before(later.name, seq) :]
                    later.save_unoffered(rest, DropReason.SHUTDOWN_TIMEOUT)
                raise
        self.received = seq
        self.marks.append((seq, {route.name: route.published for route in routes}))

    def _settled_before(self, name: str, seq: int) -> int:
        """How many of a route's events of batch `seq` a dead predecessor settled already
        (sys.maxsize: all of them)."""
        counts = self.resumed.get(name)
        if counts is None or seq > counts.done + 1:
            return 0
        return sys.maxsize if seq <= counts.done else counts.partial

    @staticmethod
    async def _offer(route: Route, events: list[Event]) -> None:
        """Hand `events` to one route, waiting for room as its when-full policy says."""
        while events:
            room = route.room()
            if room == 0:
                await route.wait_for_room()
                continue
            route.offer_many(events[:room])
            del events[:room]

    # ---- acks, snapshots, progress ----

    async def _tick(self) -> None:
        while True:
            await anyio.sleep(TICK)
            self._report()

    def _record_progress(self) -> None:
        """Write how far every sink has settled: called each time a sink wrote a batch, so that
        a successor never writes again what this host wrote."""
        self.progress.write({route.name: self._counts(route, _settled(route)) for route in self.bus._routes})

    def _report(self) -> None:
        routes = self.bus._routes
        settled = {route.name: _settled(route) for route in routes}
        acked = self.acked
        while self.marks and all(settled.get(name, 0) >= n for name, n in self.marks[0][1].items()):
            acked, published = self.marks.popleft()
            self.base.update((name, (acked, n)) for name, n in published.items())
        self._record_progress()
        if acked != self.acked:
            self.acked = acked
            self.replies.send(Op.ACK, acked)
        self.replies.send_snapshot(self._stats_body())

    def _counts(self, route: Route, settled: int) -> Counts:
        done, base = self.base.get(route.name, (self.acked, 0))
        for seq, published in self.marks:
            n = published.get(route.name, 0)
            if n > settled:
                break
            done, base = seq, n
        reduced = route.reducer.reduced if route.reducer is not None else 0
        mark = current_mark(route)
        if mark is None:  # writing a batch, not open, or no mark: the last one recorded stays
            mark = self.output_marks.get(route.name)
        self.output_marks[route.name] = mark
        return Counts(done, settled - base, route.delivered, dict(route.dropped), reduced, mark)

    def _stats_body(self) -> bytes:
        """The sinks' stats, with the last batch they count: [received, {name: SinkStats}]."""
        return msgspec.msgpack.encode((self.received, self.bus.stats()))

    # ---- closing ----

    async def _watch_control(self) -> None:
        """A byte on the control pipe (or its end: the trainer is gone) starts the shutdown clock,
        even while the host is blocked behind a full sink and reads no frames."""
        fd = self.hello.control_fd
        while True:
            await anyio.wait_readable(fd)
            try:
                os.read(fd, 64)
            except BlockingIOError:
                continue
            except OSError:
                pass
            self._start_closing()
            return

    def _start_closing(self) -> None:
        if not self.closing.is_set():
            self.deadline = time.monotonic() + self.hello.shutdown_timeout
            self.closing.set()

    async def _enforce_deadline(self) -> None:
        """Stop reading at the shutdown deadline, even in the middle of a batch a full sink holds up."""
        await self.closing.wait()
        await anyio.sleep(max(0.0, self.deadline - time.monotonic()))
        self._reading.cancel()

    def _parent_gone(self) -> bool:
        return os.getppid() != self.hello.parent

    async def _close(self) -> None:
        """Deliver what was read, within the shutdown deadline, then close every sink. Batches
        still unread then are not this host's to count: the training process still holds them,
        and saves them (it knows from the reply how far this host got)."""
        self._start_closing()
        if self.close_request is None and self._buffer:
            log.error("sink host: the trainer's last frame was cut off (%d bytes)", len(self._buffer))
        await self.bus.aclose(timeout=max(0.0, self.deadline - time.monotonic()))
        self._report()
        final = self._stats_body()
        if self.close_request is not None:
            self.replies.send(Op.CLOSED, self.close_request, final)
        await self.replies.drain(2.0)


class _Unloadable(Sink):
    """Stands in for a sink the host could not unpickle: it fails at open, so that the route
    counts every event meant for it (with why) and the stats stay whole."""

    def __init__(self, spec: SinkSpec, why: str) -> None:
        self._name, self._why = spec.name, why
        if spec.accepts is not None:
            kinds = {kind.__name__: kind for kind in EVENT_TYPES}
            self.accepts = tuple(kinds[name] for name in spec.accepts if name in kinds)  # type: ignore[misc]

    @property
    def name(self) -> str:
        return self._name

    async def open(self) -> None:
        raise RuntimeError(self._why)

    async def write_batch(self, events: Sequence[Event]) -> None:
        raise RuntimeError(self._why)


def _settled(route: Route) -> int:
    """Events a route is done with: delivered, dropped or folded into another's row."""
    reduced = route.reducer.reduced if route.reducer is not None else 0
    return route.delivered + sum(route.dropped.values()) + reduced


def _accepted(events: list[Event], route: Route) -> list[Event]:
    accepts = route.accepts
    if accepts is None:
        return list(events)
    return [event for event in events if type(event) in accepts]


def _loop_options() -> dict[str, Any]:
    """uvloop when it is installed (metricbus[fast]): the host's loop does the per-batch work."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return {}
    return {"use_uvloop": True}


async def _serve(hello: Hello, fd_in: int, fd_out: int) -> None:
    await Host(hello, fd_in, fd_out).serve()


def _read_frame(fd: int) -> tuple[int, int, bytes]:
    """One frame, reading (blocking) exactly as much as it needs."""
    header = _read_exact(fd, wire.HEADER.size)
    length, op, seq = wire.HEADER.unpack(header)
    return op, seq, _read_exact(fd, length)


def _read_exact(fd: int, n: int) -> bytes:
    chunks = []
    while n:
        chunk = os.read(fd, n)
        if not chunk:
            raise EOFError("the trainer closed the channel")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    fd_in, fd_out = os.dup(0), os.dup(1)
    os.dup2(2, 1)  # a sink that prints must not corrupt the reply stream
    try:
        op, _, body = _read_frame(fd_in)
    except EOFError:
        return
    if op != Op.HELLO:
        raise SystemExit(f"sink host: expected HELLO, got op {op}")
    hello = msgspec.msgpack.decode(body, type=Hello)
    # Every batch makes thousands of short-lived events (not tracked: gc=False) and rows; the
    # collector's default thresholds would walk the heap many times a second for nothing here.
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
    sys.path[:] = [*hello.sys_path, *(p for p in sys.path if p not in hello.sys_path)]
    os.set_blocking(fd_in, False)
    os.set_blocking(fd_out, False)
    os.set_blocking(hello.control_fd, False)
    logging.basicConfig(format="metricbus host %(process)d: %(message)s")
    try:
        anyio.run(_serve, hello, fd_in, fd_out, backend_options=_loop_options())
    except OSError as exc:
        if exc.errno != errno.EPIPE:
            log.exception("sink host failed")
    except BaseException:
        log.exception("sink host failed")
        raise
    finally:
        if os.getppid() != hello.parent:  # the trainer is gone: nobody reads its state any more
            shutil.rmtree(hello.state_dir, ignore_errors=True)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)  # sink threads a hung sink left behind must not hold the exit


if __name__ == "__main__":
    main()
