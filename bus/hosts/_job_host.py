"""The job host: one sink host for every rank of a job on this machine (`bus.hosts._job_host`).

Each rank's logger connects over the job's Unix socket (see `_job.py`) and speaks what a private
sink host's pipe carries: the same `bus.wire` frames (a RankHello first, then SINK, BATCH, FLUSH,
CLOSE; ACK, SNAPSHOT, FLUSHED and CLOSED back), each rank with its own batch numbers and acks.
Ranks add the same sinks: the host runs each once, by name; the events keep their origin (the
rank), so the rows of the ranks stay apart in every sink.

With a `RankReduce` the ranks' events pass through a `RankReducer` before the routes: the job's
row of a step is written once every rank reported it, or at the deadline (the missing ranks
named). A rank's batch is acknowledged once every sink settled it **and** every step it fed is
closed and its row offered: a host that crashes is sent again what the reduction still needs.

After such a crash, a rank starts the next host, and every rank sends it what it did not
acknowledge. The progress record (`_job_progress.py`, in the run directory) says what each sink
had settled, by identity: the new host skips, per sink, each rank's events and each job row its
predecessor settled, and does not reduce again a step whose row every sink settled; the steps
whose rows were not settled everywhere are rebuilt from the events sent again (no rank's
contribution to them was acknowledged). So every event and every row is written once.
A rank that leaves (its close, or its death: the socket ends) is done with the step it was on
and no step waits for it any more.

The host outlives every rank: it runs in a session of its own (a signal to the ranks' process
group is not for it) and stops when the last rank left (after all the ranks of this machine were
seen, or `linger` seconds after the last left); then it writes the steps still open over the
ranks present, closes its sinks and answers the last rank's CLOSE. SIGTERM stops it the same way
(what it read is delivered; the ranks still connected start another host).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import os
import signal
import socket
import sys
import time
from collections import deque
from pathlib import Path

import anyio
import msgspec
from anyio.abc import TaskGroup

from .. import wire
from .._bus import MetricBus
from .._errors import InvalidConfig, InvalidEvent
from .._events import Event
from .._rank_reduce import RankReducer, missing_lines
from ..wire import Op
from ._job import lock_run_dir
from ._job_ledger import Batch, Ledger, rows_of
from ._job_progress import JobProgress, JobRecord, Steps
from ._main import TICK, Host, _accepted, _loop_options, _read_exact, _Replies, _settled, _Unloadable
from ._messages import JobHello, RankHello, SinkSpec
from ._output_mark import current_mark, resume_output

__all__ = ["JobHost", "main"]

log = logging.getLogger("metricbus")


class _Mark:
    """A batch of one rank, until acknowledged: each route's `published` count it must see settled,
    final once no open step of the reducer holds the batch's token."""

    __slots__ = ("final", "published", "seq", "token")

    def __init__(self, seq: int, token: int, published: dict[str, int], final: bool) -> None:
        self.seq, self.token, self.published, self.final = seq, token, published, final


class _Rank:
    """One connection: a rank's logger."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.replies = _Replies(self.fd)
        self.hello: RankHello | None = None
        self.buffer = bytearray()
        self.received = 0  # its last batch handed to the routes
        self.acked = 0
        self.marks: deque[_Mark] = deque()
        self.closing: int | None = None  # its CLOSE request's id

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class JobHost:
    """Serves the ranks of one job: accepts them, feeds one MetricBus, acknowledges each."""

    def __init__(self, hello: JobHello, listener: socket.socket) -> None:
        self.hello = hello
        self.listener = listener
        self.bus = MetricBus(shutdown_timeout=hello.shutdown_timeout, raise_on_loss=False)
        self.reducer = RankReducer(hello.ranks) if hello.ranks is not None else None
        self.ranks: list[_Rank] = []
        self.last: list[_Rank] = []  # the ranks whose CLOSE is answered after the drain
        self.seen: set[int] = set()
        self.token = 0
        self.feeding = anyio.Lock()  # one batch (or closed steps' rows) offered at a time
        self.emptied_at: float | None = time.monotonic()  # when the last rank left
        self.done = anyio.Event()
        self._lock_fd: int | None = None  # the run directory's lock, held from the decision to stop
        self._tg: TaskGroup | None = None
        self.record = JobRecord(Path(hello.run_dir))
        self.previous = self.record.adopt()  # what a predecessor that crashed had settled
        self.pids = set(self.previous.pids)  # the ranks that may send again what the record covers
        self.ledgers: dict[str, Ledger] = {}  # per route
        self._record_pids: list[int] = []  # the pids the record names
        if self.reducer is not None:
            _recover_steps(self.reducer, self.previous)

    async def serve(self) -> None:
        await self.bus.__aenter__()
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                tg.start_soon(self._accept)
                tg.start_soon(self._tick)
                await self.done.wait()
                tg.cancel_scope.cancel()
        finally:
            await self._close()

    # ---- ranks ----

    async def _accept(self) -> None:
        while not self.done.is_set():
            with anyio.move_on_after(0.2):
                await anyio.wait_readable(self.listener.fileno())
            if self.done.is_set():
                return
            try:
                sock, _ = self.listener.accept()
            except BlockingIOError:
                continue
            self._adopt(sock)

    def _adopt(self, sock: socket.socket) -> None:
        for waiting in self.last:  # a rank came after the last one left: that one need not wait
            assert waiting.closing is not None
            waiting.replies.send(Op.CLOSED, waiting.closing, self._stats_body(waiting))
            waiting.close()
        self.last.clear()
        sock.setblocking(False)
        rank = _Rank(sock)
        rank.replies.send(Op.HELLO, 0)  # the greeting: the rank knows it reached a live host (`attach`)
        self.ranks.append(rank)
        self.emptied_at = None
        assert self._tg is not None
        self._tg.start_soon(self._serve_rank, rank)

    async def _serve_rank(self, rank: _Rank) -> None:
        try:
            while rank.closing is None:
                data = await self._read(rank)
                if not data:
                    break
                rank.buffer += data
                await self._handle(rank)
        finally:
            with anyio.CancelScope(shield=True):
                await self._leave(rank)

    async def _read(self, rank: _Rank) -> bytes:
        while True:
            try:
                return os.read(rank.fd, 1 << 20)
            except BlockingIOError:
                await anyio.wait_readable(rank.fd)
            except OSError:
                return b""

    async def _handle(self, rank: _Rank) -> None:
        consumed = 0
        try:
            for op, seq, body in wire.iter_frames(rank.buffer):
                consumed += wire.HEADER.size + len(body)
                match op:
                    case Op.HELLO:
                        rank.hello = msgspec.msgpack.decode(body, type=RankHello)
                        self.seen.add(rank.hello.rank)
                        self.pids.add(rank.hello.pid)
                    case Op.SINK:
                        self._add_sink(msgspec.msgpack.decode(body, type=SinkSpec))
                    case Op.BATCH:
                        await self._batch(rank, seq, body)
                    case Op.FLUSH:
                        await self.bus.flush()
                        rank.replies.send(Op.FLUSHED, seq, self._stats_body(rank))
                    case Op.CLOSE:
                        rank.closing = seq
                        break
                    case _:
                        log.error("job host: unknown frame op %r ignored", op)
        finally:
            del rank.buffer[:consumed]

    def _add_sink(self, spec: SinkSpec) -> None:
        """Every rank adds the job's sinks; the first one of a name runs, for all of them."""
        if spec.name in self.bus.sink_names:
            return
        import pickle

        try:
            sink = pickle.loads(spec.sink)
        except Exception as exc:
            log.error("job host: cannot load sink %r: %r", spec.name, exc)
            sink = _Unloadable(spec, f"cannot be loaded in the job host: {type(exc).__name__}: {exc}")
        previous = self.previous.routes.get(spec.name)
        # a crashed predecessor's unrecorded writes are cut off (they are sent again), if it can be
        cut_back = resume_output(sink, previous.mark if previous is not None else None)
        if not cut_back and previous is not None and previous.writing:
            log.warning(
                "job host: sink %r: the host before this one died while writing %d events to it; "
                "they are sent again and may be in its output twice (it cannot be cut back)",
                spec.name,
                previous.writing,
            )
        try:  # the job host holds its sinks' file locks (no rank does: they all add the same paths)
            self.bus.add_sink(sink, name=spec.name, config=spec.config, isolate="none")
        except InvalidConfig as exc:
            log.error("job host: sink %r cannot run: %s", spec.name, exc)
            self.bus.add_sink(_Unloadable(spec, str(exc)), name=spec.name, config=spec.config, isolate="none")
        route = self.bus._routes[-1]
        route.on_settled = self._settle  # recorded after every batch it writes: a successor skips it
        if route.reducer is None:  # (with rate control, `_settle` counts what may be written)
            route.on_writing = functools.partial(self._writing, route.name)
        self.ledgers[route.name] = Ledger(previous)

    async def _batch(self, rank: _Rank, seq: int, body: bytes) -> None:
        if seq <= rank.received:
            return  # sent again after a reconnect: already here
        try:
            events = wire.decode(body)
        except InvalidEvent as exc:
            log.error("job host: batch %d of a rank cannot be read and is skipped: %s", seq, exc)
            rank.received = seq
            return
        batch = Batch(_key(rank), seq, events)
        async with self.feeding:
            self.token += 1
            if self.reducer is not None:
                events = self.reducer.add_many(events, self.token)
            await self._offer(events, batch)
            rank.received = seq
            rank.marks.append(_Mark(seq, self.token, self._published(), self.reducer is None))

    async def _offer(self, events: list[Event], batch: Batch | None = None) -> None:
        """Hand `events` (of `batch`, or the job's rows alone) to every route, less what a host
        before this one settled there; each route's ledger notes them first (a route may settle
        some while the rest waits for room)."""
        if events:
            rows = rows_of(events, batch)
            for route in self.bus._routes:
                share = events if route.accepts is None else _accepted(events, route)
                mine = rows if route.accepts is None else rows_of(share, batch)
                share = self.ledgers[route.name].take(share, batch, mine, route.published)
                await Host._offer(route, list(share))

    def _published(self) -> dict[str, int]:
        return {route.name: route.published for route in self.bus._routes}

    async def _leave(self, rank: _Rank) -> None:
        """A rank left: cleanly (CLOSE) or not (it died). No step waits for it any more; a clean
        leave is answered once its events are settled (the last rank's: after the drain)."""
        if rank in self.ranks:
            self.ranks.remove(rank)
        hello = rank.hello
        same = [r for r in self.ranks if hello is not None and r.hello is not None and r.hello.rank == hello.rank]
        if self.reducer is not None and hello is not None and not same:
            async with self.feeding:
                await self._offer(self.reducer.leave(hello.site, hello.rank))
        if rank.closing is None:
            rank.close()
        else:
            await self.bus.flush()
            await self._own_settled(rank)
            rank.acked = rank.received
            rank.marks.clear()
            rank.replies.send(Op.ACK, rank.received)
            self._forget(rank)
            if not self.ranks and self._all_seen():
                self.last.append(rank)  # answered after the drain
            else:
                rank.replies.send(Op.CLOSED, rank.closing, self._stats_body(rank))
                await rank.replies.drain(2.0)
                rank.close()
        if not self.ranks:
            self.emptied_at = time.monotonic()
            self._maybe_stop()

    async def _own_settled(self, rank: _Rank) -> None:
        """Wait until every sink settled every event of `rank`'s batches."""
        if not rank.marks:
            return
        need = rank.marks[-1].published
        while True:
            settled = {route.name: _settled(route) for route in self.bus._routes}
            if all(settled.get(name, 0) >= n for name, n in need.items()):
                return
            await anyio.sleep(0.005)

    def _forget(self, rank: _Rank) -> None:
        """A rank left with everything acknowledged: it will send nothing again, so the record
        need not cover it."""
        if rank.hello is not None:
            self.pids.discard(rank.hello.pid)
            for ledger in self.ledgers.values():
                ledger.forget(_key(rank))

    def _all_seen(self) -> bool:
        return len(self.seen) >= self.hello.local_world_size

    # ---- ticks: deadlines, acks, snapshots, stopping ----

    async def _tick(self) -> None:
        while True:
            await anyio.sleep(TICK)
            if self.reducer is not None:
                async with self.feeding:
                    await self._offer(self.reducer.expired())
                    self._finalize_marks()
            self._report()
            self._settle()
            if _terminated:
                self._stop()
            self._maybe_stop()

    def _finalize_marks(self) -> None:
        """Marks of batches that no open step holds any more: they wait for the rows of the steps
        they fed too, which are offered by now (`feeding` is held)."""
        assert self.reducer is not None
        held = self.reducer.held_token()
        published: dict[str, int] | None = None
        for rank in self.ranks:
            for mark in rank.marks:
                if mark.final:
                    continue
                if held is not None and mark.token >= held:
                    break
                published = published or self._published()
                mark.published, mark.final = published, True

    def _writing(self, name: str, events: int) -> None:
        """A sink is handed `events`: recorded first, so that a successor knows they may be
        written already if this host is killed before they settle (a sink whose output it cannot
        cut back to the recorded mark may then hold them twice, and it says so)."""
        ledger = self.ledgers.get(name)
        if ledger is not None:
            ledger.progress.writing = events
            self._settle(changed=True)

    def _settle(self, *, changed: bool = False) -> None:
        """Note what every route has settled since, and write the progress record: called after
        each batch a sink writes (a crash right after must not write it again) and every tick."""
        for route in self.bus._routes:
            ledger = self.ledgers.get(route.name)
            if ledger is None:
                continue
            settled = _settled(route)
            if route.reducer is not None and settled != route.published:
                # Rate control counts the events it folds as settled before their row is written,
                # so its count is what was written only when nothing is pending: record then.
                changed = ledger.unrecorded_writing() or changed
                continue
            if ledger.settle(settled, writing=route.in_flight > 0, mark=current_mark(route)):
                changed = True
        if changed or self.pids != set(self._record_pids):
            self._record_pids = sorted(self.pids)
            routes = dict(self.previous.routes)  # a sink not added again yet keeps its part
            routes.update((name, ledger.progress) for name, ledger in self.ledgers.items())
            self.record.write(JobProgress(pids=self._record_pids, routes=routes))

    def _report(self) -> None:
        settled = {route.name: _settled(route) for route in self.bus._routes}
        for rank in self.ranks:
            acked = rank.acked
            marks = rank.marks
            while marks and marks[0].final and all(settled.get(k, 0) >= n for k, n in marks[0].published.items()):
                acked = marks.popleft().seq
            if acked != rank.acked:
                rank.acked = acked
                rank.replies.send(Op.ACK, acked)
            rank.replies.send_snapshot(self._stats_body(rank))

    def _stats_body(self, rank: _Rank) -> bytes:
        ranks = self.reducer.stats() if self.reducer is not None else None
        return msgspec.msgpack.encode((rank.received, self.bus.stats(), ranks))

    def _maybe_stop(self) -> None:
        """No rank left, all seen (or none came for `linger` seconds): stop, holding the run
        directory's lock so that no rank connects to a host on its way out."""
        if self.ranks or self.emptied_at is None or self.done.is_set():
            return
        if not self._all_seen() and time.monotonic() - self.emptied_at < self.hello.linger:
            return
        lock = lock_run_dir(Path(self.hello.run_dir), time.monotonic())
        if lock is None:
            return  # a rank is connecting right now
        try:
            sock, _ = self.listener.accept()
        except (BlockingIOError, OSError):
            self._lock_fd = lock
            self._stop()
            return
        os.close(lock)
        self._adopt(sock)

    def _stop(self) -> None:
        if self._lock_fd is None:  # SIGTERM: stop even if a rank holds the lock (it finds no socket)
            self._lock_fd = lock_run_dir(Path(self.hello.run_dir), time.monotonic() + 1.0)
        with contextlib.suppress(OSError):
            (Path(self.hello.run_dir) / "host.sock").unlink()
        self.done.set()  # the listener is closed once nothing waits on it

    async def _close(self) -> None:
        """The job is over here: write the steps still open (over the ranks present), close the
        sinks, answer the last ranks."""
        deadline = time.monotonic() + self.hello.shutdown_timeout
        if self.reducer is not None:
            with anyio.move_on_after(max(0.0, deadline - time.monotonic())):
                async with self.feeding:
                    await self._offer(self.reducer.drain())
            for line in missing_lines(self.reducer.stats()):
                log.warning("job %s: %s", self.hello.name, line)
        await self.bus.aclose(timeout=max(0.0, deadline - time.monotonic()))
        if self.ranks:  # still connected (SIGTERM): they send the next host what it must skip
            self._settle()
        else:
            self.record.remove()
        for rank in self.last:
            assert rank.closing is not None
            rank.replies.send(Op.CLOSED, rank.closing, self._stats_body(rank))
        for rank in self.last:
            await rank.replies.drain(2.0)
            rank.close()
        for rank in self.ranks:  # still connected (SIGTERM): they start another host
            rank.close()
        with contextlib.suppress(OSError):
            self.listener.close()


def _key(rank: _Rank) -> str:
    """A rank's name in the progress record: its rank, pid and link (a rank started again, or a
    second logger of it, numbers its batches from 1 again)."""
    hello = rank.hello
    return "?" if hello is None else f"{hello.rank}/{hello.pid}/{hello.link}"


def _recover_steps(reducer: RankReducer, previous: JobProgress) -> None:
    """The steps whose row every sink of a crashed predecessor settled are not reduced again."""
    routes = list(previous.routes.values())
    if not routes:
        return
    for site in {site for route in routes for site in route.rows}:
        each = [Steps(route.rows.get(site, [])) for route in routes]
        reducer.recover(site, [step for step in each[0] if all(step in steps for steps in each[1:])])


_terminated = False  # SIGTERM came: stop as if the last rank had left


def _on_sigterm(signum: int, frame: object) -> None:
    global _terminated
    _terminated = True


async def _serve(hello: JobHello, listener: socket.socket) -> None:
    await JobHost(hello, listener).serve()


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_sigterm)
    length, op, _ = wire.HEADER.unpack(_read_exact(0, wire.HEADER.size))
    if op != Op.HELLO:
        raise SystemExit(f"job host: expected HELLO, got op {op}")
    hello = msgspec.msgpack.decode(_read_exact(0, length), type=JobHello)
    os.dup2(2, 1)  # a sink that prints writes to the ranks' stderr
    sys.path[:] = [*hello.sys_path, *(p for p in sys.path if p not in hello.sys_path)]
    logging.basicConfig(format=f"metricbus job host {os.getpid()}: %(message)s")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(Path(hello.run_dir) / "host.sock"))  # the rank starting it holds the lock
    listener.listen(256)
    listener.setblocking(False)
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
    code = 0
    try:
        anyio.run(_serve, hello, listener, backend_options=_loop_options())
    except BaseException:
        log.exception("job host failed")
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # sink threads a hung sink left behind must not hold the exit


if __name__ == "__main__":
    main()
