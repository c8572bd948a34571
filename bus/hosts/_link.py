"""HostLink: one sink host process, seen from the training process.

`send_batch` frames an encoded body and puts it in the outbox, which keeps it until the host
acknowledges it and writes what the pipe takes now, never blocking (the pump writes the rest when
the pipe has room). `stats` merges the host's last snapshot with what is still on its way, so the
counters always balance and never wait.

Every batch ends in one of the three endings, whatever the host does:
- a host that dies is replaced, up to `MAX_RESTARTS` times a minute: the new one is sent every
  sink and every batch not acknowledged, and skips what its predecessor settled;
- a host that keeps dying is given up on: from then on its sinks' batches are only kept (on disk
  past the outbox's memory limit), and at close what its sinks never settled is saved;
- a host that does not close by the shutdown deadline (frozen, hung in a sink) is killed, and what
  its sinks did not settle (its progress record says how far each got) is saved from the outbox.
Saved events go to each sink's spool folder, with the `metricbus replay` command in the stats.
"""

from __future__ import annotations

import contextlib
import fcntl
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
from .._sink import Sink
from .._spool import save_events, spool_dir_of
from .._stats import DropReason, SinkState, SinkStats, accepted_share
from ..wire import Op
from ._messages import Hello, SinkSpec
from ._outbox import Outbox
from ._progress import Counts, read_progress
from ._pump import Pump

__all__ = ["HostLink"]

log = logging.getLogger("metricbus")

MAX_RESTARTS = 5  # within RESTART_WINDOW seconds; then the host's sinks are failed
RESTART_WINDOW = 60.0
_NOT_CLOSED = "the sink host did not close within the shutdown timeout (killed)"
PIPE_SIZE = 1 << 20  # ask the kernel for a 1 MiB pipe: a ship rarely waits for the host
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


def host_command(module: str) -> list[str]:
    """The command that runs `bus.hosts.<module>.main()` in a new interpreter. (`python -m` would
    put the current directory first on the path, and a folder named `bus` there would be imported
    instead; a host runs in the trainer's directory, where sinks' relative paths point, so it
    imports this very package explicitly.)"""
    return [
        sys.executable,
        "-c",
        f"import sys; sys.path.insert(0, {_PACKAGE_ROOT!r}); from bus.hosts.{module} import main; main()",
    ]


_stats_decoder = msgspec.msgpack.Decoder(tuple[int, dict[str, SinkStats]])


class _Sink(msgspec.Struct):
    """What the link knows of one of its sinks."""

    spec: SinkSpec
    after: int  # the batch it was added after: a restarted host gets it in the same place
    accepts: frozenset[type[Event]] | None
    spool: Path  # where what it never settles is saved


def host_budget(shutdown_timeout: float) -> float:
    """The host's part of a shutdown timeout: it must have replied before the training process's
    deadline, which then kills it and saves what it did not settle."""
    return shutdown_timeout - min(1.0, shutdown_timeout / 4)


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
        self.dead: str | None = None  # why the host was given up on: its batches are only kept
        self.outbox = Outbox(self.state_dir / "outbox")
        self._lock = threading.RLock()
        self._replies = bytearray()
        self._requests = 0
        self._waiting: dict[int, threading.Event] = {}  # FLUSH/CLOSE request id -> set on reply
        self._closing = False
        self._deadline = float("inf")  # time.monotonic() by which the host must have closed
        self._close_request = threading.Event()
        self._closed_cleanly = False  # the host replied CLOSED
        self._final: dict[str, SinkStats] | None = None
        self._restart_times: deque[float] = deque()
        self._proc: subprocess.Popen[bytes] | None = None
        self._control = -1
        self._start(resume=False)
        pump.links.append(self)

    # ---- the training thread's side ----

    def add_sink(self, name: str, sink: Sink, config: SinkConfig) -> None:
        """Run `sink` (picklable by reference) in the host from the next batch on."""
        accepts = sink.accepts
        kinds = None if accepts is None else [kind.__name__ for kind in accepts]
        spec = SinkSpec(name=name, sink=pickle.dumps(sink), config=config, accepts=kinds)
        spool = spool_dir_of(name, sink.output_dir, config.spool_dir)
        with self._lock:
            self.sinks[name] = _Sink(spec, self.seq, None if accepts is None else frozenset(accepts), spool)
            self._send(wire.frame(Op.SINK, len(self.sinks) - 1, msgspec.msgpack.encode(spec)))

    def send_batch(self, body: bytes, items: Sequence[Any]) -> None:
        """Ship one encoded body (of `items`, whose kinds the stats count while it travels);
        returns at once. The outbox keeps it until the host has settled it."""
        with self._lock:
            self.seq += 1
            self.outbox.add_batch(self.seq, body, items)
            if self._write():
                self.pump.wake()

    @property
    def backlog(self) -> int:
        """Bytes sent that the host's pipe has not taken yet."""
        return self.outbox.backlog

    @property
    def backlog_events(self) -> int:
        """Events sent that the host's pipe has not taken yet (0 once the host is given up on:
        nothing waits for it then, its batches are kept to be saved)."""
        return self.outbox.unwritten_events

    def flush(self, timeout: float | None) -> bool:
        """Wait until the host has written and flushed everything sent before; False on timeout.
        A host given up on has nothing more to flush: its events are kept to be saved."""
        if self.dead is not None:
            return True
        done = self._request(Op.FLUSH)
        return done.wait(timeout)

    def begin_close(self) -> None:
        """Ask the host to deliver everything and close its sinks, by the shutdown deadline, which
        starts now; `finish_close` waits for it. (Two steps, so that every host of a bus closes at
        once.)"""
        with self._lock:
            if self._closing or self.closed:
                return
            self._closing = True
            self._deadline = time.monotonic() + self.shutdown_timeout
        if self.dead is not None:
            return
        self._close_request = self._request(Op.CLOSE)
        with contextlib.suppress(OSError):  # the clock starts now, even if the host is behind
            os.write(self._control, b"\0")

    def finish_close(self, timeout: float) -> dict[str, SinkStats]:
        """Wait for the host to close, at most `timeout` seconds and never past the shutdown
        deadline; returns the final stats. A host that has not closed by then is killed, and what
        its sinks did not settle is saved from the outbox and counted (with the replay command)."""
        self.begin_close()
        if self._final is not None:
            return dict(self._final)
        wait = max(0.0, min(timeout, self._deadline - time.monotonic()))
        if self.dead is None:
            self._close_request.wait(wait)
        with self._lock:
            self.closed = True
            proc = self._proc
        if proc is not None:
            if not self._closed_cleanly:
                log.error("metricbus: sink host %s did not close within the shutdown timeout; killing it", self.label)
                proc.kill()
            try:
                proc.wait(1.0 if self._closed_cleanly else 5.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self in self.pump.links:
            self.pump.links.remove(self)
        with self._lock:
            self._take_snapshot()
            self._final = self._settle()
        self._release()
        return dict(self._final)

    def stats(self) -> dict[str, SinkStats]:
        """Every sink's counters: the host's last snapshot, and what is on its way as queued."""
        with self._lock:
            if self._final is not None:
                return dict(self._final)
            self._take_snapshot()
            in_transit = [entry.count() for entry in self.outbox.retained if entry.seq > self.received]
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
        if proc is None or proc.stdout is None or proc.stdout.closed or self.closed:
            return None
        return proc.stdout.fileno()

    @property
    def data_fd(self) -> int | None:
        proc = self._proc
        if proc is None or proc.stdin is None or proc.stdin.closed or self.closed:
            return None
        return proc.stdin.fileno()

    def serve(self, *, readable: bool, writable: bool) -> None:
        """One turn of the pump: write what waits, read replies, replace a dead host."""
        if self.closed or self.dead is not None:
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
                host_command("_main"),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                close_fds=True,
                pass_fds=(control_r,),
                # its own session: signals for the trainer's process group (Ctrl-C, a Jupyter
                # kernel terminating its children at shutdown) are the trainer's to handle
                start_new_session=True,
            )
        finally:
            os.close(control_r)
        self._control = control_w
        assert proc.stdin is not None and proc.stdout is not None
        with contextlib.suppress(OSError):  # a bigger pipe: fewer ships find it full
            fcntl.fcntl(proc.stdin.fileno(), fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        budget = host_budget(self.shutdown_timeout)
        if self._closing:  # what is left of it
            budget = max(0.0, min(budget, self._deadline - time.monotonic() - min(1.0, self.shutdown_timeout / 4)))
        hello = Hello(
            shutdown_timeout=budget,
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

    def _send(self, frame: bytes) -> None:
        """Queue a control frame and write what the pipe takes now (lock held)."""
        self.outbox.add_control(frame)
        if self._write():
            self.pump.wake()

    def _write(self) -> bool:
        """Write from the outbox without blocking (lock held); True if some is left."""
        fd = self.data_fd
        if fd is None or self.dead is not None:
            return False
        try:
            return self.outbox.write(fd)
        except OSError:  # the host died: the pump notices on its reply pipe and starts another
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
        fd = self.reply_fd
        if fd is None:
            return True
        try:
            data = os.read(fd, 1 << 20)
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
                self.outbox.ack(seq)
            case Op.SNAPSHOT:  # kept as it came: decoded only when someone asks for the stats
                self._snapshot_body = body
            case Op.FLUSHED | Op.CLOSED:
                self._snapshot_body = body
                self._take_snapshot()
                if op == Op.CLOSED:
                    self._closed_cleanly = True
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
        if self._closed_cleanly or self.closed:  # it closed as asked
            return
        now = time.monotonic()
        self._restart_times.append(now)
        while self._restart_times and now - self._restart_times[0] > RESTART_WINDOW:
            self._restart_times.popleft()
        if len(self._restart_times) > MAX_RESTARTS:
            self._give_up(f"the sink host died {MAX_RESTARTS + 1} times within a minute (last exit code {code})")
            return
        log.warning("metricbus: sink host %s died (exit code %s); starting another", self.label, code)
        with self._lock:
            self.restarts += 1
            self._close_pipes()
            self._replace()

    def _replace(self) -> None:
        """Start a host that resumes where the last one stopped (lock held)."""
        self._start(resume=True)
        self.outbox.requeue(self._resend())
        self.received = self.acked
        self._write()
        self.pump.wake()

    def _give_up(self, why: str) -> None:
        """No more hosts: the sinks' batches are only kept from now on (in memory, then on disk),
        and saved at close. Nothing waits for this host any more."""
        spools = ", ".join(sorted({str(sink.spool) for sink in self.sinks.values()}))
        log.error(
            "metricbus: %s; giving up on it: the events of its sinks are kept and saved at close in %s "
            "(replay them with: metricbus replay <folder> --to ...)",
            why,
            spools,
        )
        with self._lock:
            self.dead = why
            self._close_pipes()
            self._proc = None
            self.outbox.stop_writing()
            for done in self._waiting.values():
                done.set()
            self._waiting.clear()
        self._close_request.set()

    def _resend(self) -> list[Any]:
        """Everything a new host needs, in order: the sinks, each where it was added among the
        unacknowledged batches, then those batches and the requests still waiting."""
        frames: list[Any] = []
        sinks = list(self.sinks.values())
        index = 0
        for entry in self.outbox.retained:
            while index < len(sinks) and sinks[index].after < entry.seq:
                frames.append(wire.frame(Op.SINK, index, msgspec.msgpack.encode(sinks[index].spec)))
                index += 1
            frames.append(entry)
        frames.extend(
            wire.frame(Op.SINK, i, msgspec.msgpack.encode(s.spec)) for i, s in enumerate(sinks[index:], index)
        )
        for request in self._waiting:
            frames.append(wire.frame(Op.CLOSE if self._closing else Op.FLUSH, request, b""))
        return frames

    def _take_snapshot(self) -> None:
        """Decode the host's latest snapshot, if a newer one came (lock held). Snapshots come
        every tick; decoding each would be Python work in the training process for nothing."""
        body, self._snapshot_body = self._snapshot_body, None
        if body is None:
            return
        self.received, self.snapshot = self._decode_snapshot(body)
        for entry in self.outbox.retained:  # what the host has, its snapshot counts
            if entry.seq > self.received:
                break
            entry.items = None

    def _decode_snapshot(self, body: bytes) -> tuple[int, dict[str, SinkStats]]:
        """A snapshot's body: the last batch it counts, and every sink's stats."""
        return _stats_decoder.decode(body)

    def _sink_stats(self, name: str, sink: _Sink, held: int) -> SinkStats:
        base = self.snapshot.get(name)
        if base is None:
            base = SinkStats(name, SinkState.PENDING, 0, 0, {}, 0, 0, 0, 0)
        if self.dead is not None:
            base = msgspec.structs.replace(base, state=SinkState.FAILED, last_error=self.dead)
        return msgspec.structs.replace(
            base,
            published=base.published + held,
            queued=base.queued + held,
            restarts=base.restarts + self.restarts,
            where=self.where,
        )

    def _settle(self) -> dict[str, SinkStats]:
        """The final stats (lock held, the host gone): each sink's counters as far as it settled
        (its progress record), and every event of the outbox it did not settle saved to its spool
        folder and counted, as missed by shutdown or, for a host given up on, by failure."""
        progress = read_progress(self.state_dir / "progress")
        batches = [(seq, _events(body, seq, self.label)) for seq, body in self.outbox.unacknowledged()]
        reason = DropReason.SINK_FAILED if self.dead is not None else DropReason.SHUTDOWN_TIMEOUT
        out: dict[str, SinkStats] = {}
        for name, sink in self.sinks.items():
            counts = progress.get(name)
            base = self.snapshot.get(name) or SinkStats(name, SinkState.PENDING, 0, 0, {}, 0, 0, 0, 0)
            if counts is None or counts.done < max(self.acked, sink.after):
                counts = Counts(
                    done=max(self.acked, sink.after),
                    delivered=base.delivered,
                    dropped=dict(base.dropped),
                    reduced=base.reduced,
                )
            missed = _unsettled(batches, sink, counts)
            dropped = dict(counts.dropped)
            saved, saved_to = base.saved, base.saved_to
            if missed:
                dropped[reason.value] = dropped.get(reason.value, 0) + len(missed)
                folder = save_events(sink.spool, name, missed)
                if folder is not None:
                    saved, saved_to = saved + len(missed), str(folder)
                    log.error(
                        "metricbus: sink %r did not get %d events; they are saved in %s (replay them with: "
                        "metricbus replay %s --to ...)",
                        name,
                        len(missed),
                        folder,
                        folder,
                    )
            settled = counts.delivered + sum(counts.dropped.values()) + counts.reduced
            failed = bool(missed) or self.dead is not None or not self._closed_cleanly
            out[name] = msgspec.structs.replace(
                base,
                state=SinkState.FAILED if failed else base.state,
                published=settled + len(missed),
                delivered=counts.delivered,
                dropped=dropped,
                reduced=counts.reduced,
                queued=0,
                in_flight=0,
                saved=saved,
                saved_to=saved_to,
                restarts=base.restarts + self.restarts,
                where=self.where,
                last_error=self.dead
                or (
                    base.last_error
                    if self._closed_cleanly
                    else "the sink host did not close within the shutdown timeout"
                ),
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
        self.outbox.close()
        shutil.rmtree(self.state_dir, ignore_errors=True)


def _events(body: bytes, seq: int, label: str) -> list[Event]:
    try:
        return wire.decode(body)
    except Exception as exc:  # never from our own encoder; reported, not fatal
        log.error("metricbus: batch %d of sink host %s cannot be read back: %r", seq, label, exc)
        return []


def _unsettled(batches: Sequence[tuple[int, list[Event]]], sink: _Sink, counts: Counts) -> list[Event]:
    """The events of `batches` that `sink` takes and had not settled by `counts`."""
    accepts = sink.accepts
    missed: list[Event] = []
    for seq, events in batches:
        if seq <= counts.done or seq <= sink.after:
            continue
        share = events if accepts is None else [e for e in events if type(e) in accepts]
        missed += share[counts.partial :] if seq == counts.done + 1 else share
    return missed
