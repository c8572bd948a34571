"""HostLink: one sink host process, seen from the training process.

`send_batch` frames an encoded body, keeps it until the host acknowledges it and writes what the
pipe takes now, never blocking (the pump writes the rest when the pipe has room). `stats` merges
the host's last snapshot with what is still on its way, so the counters always balance and
never wait. A host that dies is replaced, up to `MAX_RESTARTS` times a minute: the new one is
sent every sink and every batch not acknowledged, and skips what its predecessor settled.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import logging
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

from .. import wire
from .._config import SinkConfig
from .._events import Event
from ._messages import Hello, SinkSpec
from ._pump import Pump
from .._sink import Sink
from .._stats import DropReason, SinkState, SinkStats, accepted_share
from ..wire import Op

__all__ = ["HostLink"]

log = logging.getLogger("metricbus")

MAX_RESTARTS = 5  # within RESTART_WINDOW seconds; then the host's sinks are failed
RESTART_WINDOW = 60.0
PIPE_SIZE = 1 << 20  # ask the kernel for a 1 MiB pipe: a ship rarely waits for the host
RETAIN_LIMIT = 256 << 20  # bytes of unacknowledged batches kept for a restarted host
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
# `python -m bus.hosts._main` would put the current directory first on the path: a folder named `bus`
# there would be imported instead. The host runs in the trainer's directory (sinks hold relative
# paths), so it imports this very package explicitly.
_HOST_MAIN = f"import sys; sys.path.insert(0, {_PACKAGE_ROOT!r}); from bus.hosts._main import main; main()"
_stats_decoder = msgspec.msgpack.Decoder(tuple[int, dict[str, SinkStats]])


class _Sink(msgspec.Struct):
    """What the link knows of one of its sinks."""

    spec: SinkSpec
    after: int  # the batch it was added after: a restarted host gets it in the same place
    accepts: frozenset[type[Event]] | None


class _Batch:
    """A batch sent and not yet acknowledged: its frame (to send again to a new host) and, until
    the host has it, its items, whose kinds the stats count only when asked."""

    __slots__ = ("body", "header", "items", "kinds", "seq")

    def __init__(self, seq: int, header: bytes, body: bytes, items: Sequence[Any]) -> None:
        self.seq = seq
        self.header = header  # this host's frame header; the body is shared by every host
        self.body = body
        self.items: Sequence[Any] | None = items
        self.kinds: dict[type[Event], int] | None = None

    def count(self) -> dict[type[Event], int]:
        if self.kinds is None:
            self.kinds = wire.item_kinds(self.items or ())
            self.items = None
        return self.kinds


class HostLink:
    """A sink host process for some of a bus's sinks. Thread-safe: the training thread sends,
    flushes and closes; the pump thread serves replies and restarts."""

    def __init__(self, label: str, pump: Pump, *, shutdown_timeout: float) -> None:
        self.label = label
        self.pump = pump
        self.shutdown_timeout = shutdown_timeout
        self.state_dir = Path(tempfile.mkdtemp(prefix="metricbus-host-"))
        self.sinks: dict[str, _Sink] = {}
        self.seq = 0  # the last batch sent
        self.acked = 0
        self.received = 0  # the last batch the host's snapshot counts
        self.snapshot: dict[str, SinkStats] = {}
        self._snapshot_body: bytes | None = None  # the latest snapshot, not decoded yet
        self.restarts = 0
        self.closed = False
        self._lock = threading.RLock()
        self._retained: deque[_Batch] = deque()
        self._retained_bytes = 0
        self._unprotected = 0  # batches dropped from retention (over RETAIN_LIMIT) before their ack
        self._outbox: deque[memoryview] = deque()  # chunks the pipe has not taken yet, in order
        self._backlog = 0  # their bytes
        self._replies = bytearray()
        self._requests = 0
        self._waiting: dict[int, threading.Event] = {}  # FLUSH/CLOSE request id -> set on reply
        self._closing = False
        self._close_request = threading.Event()
        self._events_per_byte = 0.0
        self._final: dict[str, SinkStats] | None = None
        self._restart_times: deque[float] = deque()
        self._proc: subprocess.Popen[bytes] | None = None
        self._closing = False
        self._control = -1
        self._start(resume=False)
        pump.links.append(self)

    # ---- the training thread's side ----

    def add_sink(self, name: str, sink: Sink, config: SinkConfig) -> None:
        """Run `sink` (picklable by reference) in the host from the next batch on."""
        accepts = sink.accepts
        kinds = None if accepts is None else [kind.__name__ for kind in accepts]
        spec = SinkSpec(name=name, sink=pickle.dumps(sink), config=config, accepts=kinds)
        with self._lock:
            self.sinks[name] = _Sink(spec, self.seq, None if accepts is None else frozenset(accepts))
            self._send(wire.frame(Op.SINK, len(self.sinks) - 1, msgspec.msgpack.encode(spec)))

    def send_batch(self, body: bytes, items: Sequence[Any]) -> None:
        """Ship one encoded body (of `items`, kept until the host has it, for the stats);
        returns at once."""
        with self._lock:
            self.seq += 1
            header = wire.HEADER.pack(len(body), Op.BATCH, self.seq)
            self._retained.append(_Batch(self.seq, header, body, items))
            self._events_per_byte = len(items) / (len(body) + 1)
            self._retained_bytes += len(body)
            while self._retained_bytes > RETAIN_LIMIT and len(self._retained) > 1:
                self._retained_bytes -= len(self._retained.popleft().body)
                if not self._unprotected:
                    log.warning(
                        "metricbus: sink host %s is more than %d MiB behind; the oldest batches are no "
                        "longer kept to be sent again should it crash",
                        self.label,
                        RETAIN_LIMIT >> 20,
                    )
                self._unprotected += 1
            self._send(header, body)

    @property
    def backlog(self) -> int:
        """Bytes sent that the host's pipe has not taken yet."""
        return self._backlog

    @property
    def backlog_events(self) -> int:
        """About how many events the backlog holds (from the bytes of the last batch)."""
        backlog = self._backlog
        return int(backlog * self._events_per_byte) if backlog else 0

    def flush(self, timeout: float | None) -> bool:
        """Wait until the host has written and flushed everything sent before; False on timeout."""
        done = self._request(Op.FLUSH)
        return done.wait(timeout)

    def begin_close(self) -> None:
        """Ask the host to deliver everything within its shutdown timeout and close its sinks;
        `finish_close` waits for it. (Two steps, so that every host of a logger closes at once.)"""
        with self._lock:
            if self._closing or self.closed:
                return
            self._closing = True
        self._close_request = self._request(Op.CLOSE)
        with contextlib.suppress(OSError):  # the clock starts now, even if the host is behind
            os.write(self._control, b"\0")

    def finish_close(self, timeout: float) -> dict[str, SinkStats]:
        """Wait up to `timeout` (+2 s) for the host to close; returns the final stats. A host that
        does not answer in time is killed, and what it did not confirm is counted as lost to the
        shutdown timeout."""
        self.begin_close()
        if self.closed:
            return self.stats()
        self._close_request.wait(timeout + 2.0)
        with self._lock:
            self.closed = True
            proc = self._proc
        if proc is not None:
            try:
                proc.wait(1.0)
            except subprocess.TimeoutExpired:
                log.error("metricbus: sink host %s did not exit; killing it", self.label)
                proc.kill()
                proc.wait()
        if self in self.pump.links:
            self.pump.links.remove(self)
        final = self._final if self._final is not None else self._abandoned_stats()
        self._final = final
        self._release()
        return dict(final)

    def stats(self) -> dict[str, SinkStats]:
        """Every sink's counters: the host's last snapshot, and what is on its way as queued."""
        with self._lock:
            if self._final is not None:
                return dict(self._final)
            self._take_snapshot()
            in_transit = [batch.count() for batch in self._retained if batch.seq > self.received]
            out: dict[str, SinkStats] = {}
            for name, sink in self.sinks.items():
                held = sum(accepted_share(kinds, sink.accepts) for kinds in in_transit)
                out[name] = self._sink_stats(name, sink, held)
            return out

    def forget(self) -> None:
        """In a forked child: the host belongs to the parent; close the inherited pipes only."""
        proc = self._proc
        fds = [self._control] + ([s.fileno() for s in (proc.stdin, proc.stdout) if s is not None] if proc else [])
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._proc = None
        self.closed = True

    @property
    def pid(self) -> int | None:
        """The host process's pid (a restart changes it)."""
        proc = self._proc
        return None if proc is None else proc.pid

    @property
    def where(self) -> str:
        """Where its sinks run, for their stats: "host shared (pid 1234)"."""
        return f"host {self.label} (pid {self.pid})"

    # ---- the pump's side ----

    @property
    def reply_fd(self) -> int | None:
        proc = self._proc
        return None if proc is None or proc.stdout is None or self.closed else proc.stdout.fileno()

    @property
    def data_fd(self) -> int | None:
        proc = self._proc
        return None if proc is None or proc.stdin is None or self.closed else proc.stdin.fileno()

    def serve(self, *, readable: bool, writable: bool) -> None:
        """One turn of the pump: write what waits, read replies, replace a dead host."""
        if self.closed:
            return
        if writable:
            with self._lock:
                self._write()
        if readable and not self._read_replies():
            self._host_died()

    # ---- internals ----

    def _start(self, *, resume: bool) -> None:
        control_r, control_w = os.pipe()
        try:
            proc = subprocess.Popen(
                [sys.executable, "-c", _HOST_MAIN],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                close_fds=True,
                pass_fds=(control_r,),
            )
        finally:
            os.close(control_r)
        self._control = control_w
        assert proc.stdin is not None and proc.stdout is not None
        with contextlib.suppress(OSError):  # a bigger pipe: fewer ships find it full
            fcntl.fcntl(proc.stdin.fileno(), fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        hello = Hello(
            shutdown_timeout=self.shutdown_timeout,
            state_dir=str(self.state_dir),
            sys_path=[p for p in sys.path if p],
            parent=os.getpid(),
            control_fd=control_r,
            resume=resume,
            closing=self._closing,
        )
        os.write(proc.stdin.fileno(), wire.frame(Op.HELLO, 0, msgspec.msgpack.encode(hello)))
        os.set_blocking(proc.stdin.fileno(), False)
        os.set_blocking(proc.stdout.fileno(), False)
        self._proc = proc
        self._replies = bytearray()

    def _send(self, *chunks: bytes) -> None:
        """Queue `chunks` and write what the pipe takes now (lock held). Nothing is copied: the
        outbox holds the chunks themselves, and a partly written one as a view of its rest."""
        for chunk in chunks:
            self._outbox.append(memoryview(chunk))
            self._backlog += len(chunk)
        if self._write():
            self.pump.wake()

    def _write(self) -> bool:
        """Write from the outbox without blocking (lock held); True if some is left."""
        proc, outbox = self._proc, self._outbox
        if proc is None or proc.stdin is None:
            return bool(outbox)
        fd = proc.stdin.fileno()
        while outbox:
            try:
                n = os.writev(fd, list(itertools.islice(outbox, 64)))
            except BlockingIOError:
                return True
            except OSError:  # the host died: the pump notices on its reply pipe and starts another
                return True
            self._backlog -= n
            while n:
                head = outbox[0]
                if n < len(head):
                    outbox[0] = head[n:]
                    return True  # the pipe took part of it: it is full
                n -= len(head)
                outbox.popleft()
        return False

    def _request(self, op: Op) -> threading.Event:
        with self._lock:
            self._requests += 1
            done = threading.Event()
            self._waiting[self._requests] = done
            self._send(wire.frame(op, self._requests, b""))
        return done

    def _read_replies(self) -> bool:
        """Read and handle what the host wrote; False when its end closed (it died or exited)."""
        proc = self._proc
        if proc is None or proc.stdout is None:
            return True
        try:
            data = os.read(proc.stdout.fileno(), 1 << 20)
        except BlockingIOError:
            return True
        except OSError:
            data = b""
        if not data:
            return False
        with self._lock:
            self._replies += data
            consumed = 0
            for op, seq, body in wire.iter_frames(self._replies):
                consumed += wire.HEADER.size + len(body)
                self._reply(op, seq, body)
            del self._replies[:consumed]
        return True

    def _reply(self, op: int, seq: int, body: bytes) -> None:
        match op:
            case Op.ACK:
                self.acked = seq
                while self._retained and self._retained[0].seq <= seq:
                    self._retained_bytes -= len(self._retained.popleft().body)
            case Op.SNAPSHOT:  # kept as it came: decoded only when someone asks for the stats
                self._snapshot_body = body
            case Op.FLUSHED | Op.CLOSED:
                self._snapshot_body = body
                self._take_snapshot()
                if op == Op.CLOSED:  # what never reached its pipe is lost now
                    self._final = self._abandoned_stats() if self.received < self.seq else self.stats()
                for request in [r for r in self._waiting if r <= seq]:
                    self._waiting.pop(request).set()
            case _:
                log.error("metricbus: unknown reply op %r from sink host %s", op, self.label)

    def _host_died(self) -> None:
        proc = self._proc
        code = None
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                code = proc.wait(1.0)
        if self._final is not None:  # it closed as asked
            return
        now = time.monotonic()
        self._restart_times.append(now)
        while self._restart_times and now - self._restart_times[0] > RESTART_WINDOW:
            self._restart_times.popleft()
        if len(self._restart_times) > MAX_RESTARTS:
            log.error("metricbus: sink host %s died %d times within a minute; giving up", self.label, MAX_RESTARTS + 1)
            with self._lock:
                self._final = self._abandoned_stats(f"the sink host died {MAX_RESTARTS + 1} times within a minute")
                for done in self._waiting.values():
                    done.set()
                self._waiting.clear()
            return
        log.warning("metricbus: sink host %s died (exit code %s); starting another", self.label, code)
        with self._lock:
            self.restarts += 1
            self._close_pipes()
            self._start(resume=True)
            resend = self._resend()
            self._outbox = deque([memoryview(resend)])
            self._backlog = len(resend)
            self.received = self.acked
            self._write()
        self.pump.wake()

    def _resend(self) -> bytes:
        """Everything a new host needs, in order: the sinks, each where it was added among the
        unacknowledged batches, then those batches and the requests still waiting."""
        frames: list[bytes] = []
        sinks = list(self.sinks.values())
        index = 0
        for batch in self._retained:
            while index < len(sinks) and sinks[index].after < batch.seq:
                frames.append(wire.frame(Op.SINK, index, msgspec.msgpack.encode(sinks[index].spec)))
                index += 1
            frames += (batch.header, batch.body)
        frames.extend(
            wire.frame(Op.SINK, i, msgspec.msgpack.encode(s.spec)) for i, s in enumerate(sinks[index:], index)
        )
        for request in self._waiting:
            frames.append(wire.frame(Op.CLOSE if self._closing else Op.FLUSH, request, b""))
        return b"".join(frames)

    def _take_snapshot(self) -> None:
        """Decode the host's latest snapshot, if a newer one came (lock held). Snapshots come
        every tick; decoding each would be Python work in the training process for nothing."""
        body, self._snapshot_body = self._snapshot_body, None
        if body is None:
            return
        self.received, self.snapshot = _stats_decoder.decode(body)
        for batch in self._retained:  # what the host has, its snapshot counts
            if batch.seq > self.received:
                break
            batch.items = None

    def _sink_stats(self, name: str, sink: _Sink, held: int) -> SinkStats:
        base = self.snapshot.get(name)
        if base is None:
            base = SinkStats(name, SinkState.PENDING, 0, 0, {}, 0, 0, 0, 0)
        return msgspec.structs.replace(
            base,
            published=base.published + held,
            queued=base.queued + held,
            restarts=base.restarts + self.restarts,
            where=self.where,
        )

    def _abandoned_stats(self, why: str | None = None) -> dict[str, SinkStats]:
        """Final stats when the host never confirmed its close: what it did not settle is lost."""
        out: dict[str, SinkStats] = {}
        for name, stats in self.stats().items() if self._final is None else self._final.items():
            unsettled = stats.queued + stats.in_flight
            if not unsettled and why is None:
                out[name] = stats
                continue
            dropped = dict(stats.dropped)
            reason = DropReason.SINK_FAILED if why else DropReason.SHUTDOWN_TIMEOUT
            if unsettled:
                dropped[reason.value] = dropped.get(reason.value, 0) + unsettled
            out[name] = msgspec.structs.replace(
                stats,
                state=SinkState.FAILED,
                dropped=dropped,
                queued=0,
                in_flight=0,
                last_error=why or stats.last_error or "the sink host did not finish within the shutdown timeout",
            )
        return out

    def _close_pipes(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._control)
        proc = self._proc
        if proc is None:
            return
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    def _release(self) -> None:
        self._close_pipes()
        self._retained.clear()
        self._outbox.clear()
        self._backlog = 0
        shutil.rmtree(self.state_dir, ignore_errors=True)
