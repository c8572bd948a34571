"""JobLink: the job's shared sink host, seen from one rank.

A `HostLink` whose channel is the job's Unix socket instead of a child's pipes: the same frames,
the same outbox (every batch kept until the host acknowledges it), the same account at close.
What differs is whose host it is:

- it is found or started by `attach` (the first rank of the job on this machine starts it, in a
  session of its own, and the others connect), never owned by one rank;
- a host that dies (the socket ends before CLOSED) is found or started again the same way, by
  whichever rank gets there first, and every rank sends it again what it did not acknowledge;
- a rank never kills it: at its close, a rank whose host did not answer by the deadline saves
  what it did not acknowledge (with the replay command) and leaves the host to the others.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys

import msgspec

from .. import wire
from .._rank_reduce import RankReduce, RankStats
from .._stats import SinkStats
from ..wire import Op
from ._job import Job, attach, peer_pid, run_dir
from ._link import HostLink, host_budget, host_command
from ._messages import JobHello, RankHello
from ._pump import Pump

__all__ = ["JobLink"]

log = logging.getLogger("metricbus")

_stats_decoder = msgspec.msgpack.Decoder(tuple[int, dict[str, SinkStats], RankStats | None])


class JobLink(HostLink):
    """One rank's link to its job's host. `ranks`: the cross-rank reduction the host runs if this
    rank is the one that starts it (the ranks of a job pass the same); `site`: the job's site."""

    def __init__(
        self,
        job: Job,
        pump: Pump,
        *,
        shutdown_timeout: float,
        ranks: RankReduce | None,
        site: str = "",
        linger: float = 5.0,
    ) -> None:
        self.job = job
        self.reduction = ranks
        self.site = site
        self.linger = linger
        self.run = run_dir(job)
        self.rank_stats: RankStats | None = None  # the host's reducer, as of its last snapshot
        self._sock: socket.socket | None = None
        self._host_pid: int | None = None
        self._spawned: list[subprocess.Popen[bytes]] = []  # hosts this rank started (reaped at close)
        self._link_id = os.urandom(6).hex()  # two loggers of one rank number their batches apart
        super().__init__(f"job {job.name}", pump, shutdown_timeout=shutdown_timeout)

    @property
    def pid(self) -> int | None:
        return self._host_pid

    @property
    def reply_fd(self) -> int | None:
        sock = self._sock
        return None if sock is None or self.closed else sock.fileno()

    @property
    def data_fd(self) -> int | None:
        return self.reply_fd

    def finish_close(self, timeout: float) -> dict[str, SinkStats]:
        final = super().finish_close(timeout)
        if not self._closed_cleanly and self.dead is None:
            log.error("metricbus: the job host of %s did not answer this rank's close in time", self.job.name)
        for proc in self._spawned:  # it outlives this rank; reap it only if it is done already
            with contextlib.suppress(OSError):
                proc.poll()
        return final

    def forget(self) -> None:
        """In a forked child: close the inherited socket (the connection stays the parent's)."""
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()
        self.closed = True

    # ---- internals ----

    def _start(self, *, resume: bool) -> None:
        sock, proc = attach(self.run, self._spawn, timeout=max(30.0, 2 * self.shutdown_timeout))
        if proc is not None:
            self._spawned.append(proc)
        hello = RankHello(rank=self.job.rank, pid=os.getpid(), site=self.site, link=self._link_id)
        sock.sendall(wire.frame(Op.HELLO, 0, msgspec.msgpack.encode(hello)))
        sock.setblocking(False)
        self._sock = sock
        self._host_pid = peer_pid(sock)
        self._replies = bytearray()

    def _spawn(self) -> subprocess.Popen[bytes]:
        budget = host_budget(self.shutdown_timeout)
        hello = JobHello(
            name=self.job.name,
            run_dir=str(self.run),
            shutdown_timeout=budget,
            sys_path=[p for p in sys.path if p],
            local_world_size=self.job.local_world_size,
            ranks=self.reduction,
            linger=self.linger,
        )
        proc = subprocess.Popen(
            host_command("_job_host"),
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            close_fds=True,
            start_new_session=True,  # a signal to the ranks' process group is not for the job's host
        )
        assert proc.stdin is not None
        proc.stdin.write(wire.frame(Op.HELLO, 0, msgspec.msgpack.encode(hello)))
        proc.stdin.close()
        return proc

    def _replace(self) -> None:
        try:
            super()._replace()
        except (OSError, TimeoutError) as exc:
            self._give_up(f"the job host cannot be reached or started again ({exc})")

    def _close_pipes(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    def _decode_snapshot(self, body: bytes) -> tuple[int, dict[str, SinkStats]]:
        """The job host's snapshot also carries its reducer's stats."""
        received, snapshot, self.rank_stats = _stats_decoder.decode(body)
        return received, snapshot
