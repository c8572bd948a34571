"""Pump: the one background thread of a training process that talks to its sink hosts.

It waits in `select()` (holding no GIL) for replies from the hosts and for room in their pipes,
and runs its tick callbacks every `interval`. The training thread ships by itself, with a write
that never blocks; the pump only finishes writes that a full pipe held back, reads acks and
snapshots, notices a host that died and starts another, and ships for a loop that stopped
logging. A loop that holds the GIL can starve this thread (CPython's convoy effect): nothing
that must happen on time depends on it while the loop keeps logging.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._link import HostLink

__all__ = ["Pump"]

log = logging.getLogger("metricbus")


class Pump:
    """A daemon thread serving `links` and calling `ticks` every `interval` seconds."""

    def __init__(self, interval: float, name: str = "metricbus pump") -> None:
        self.interval = interval
        self.links: list[HostLink] = []
        self.ticks: list[Callable[[], None]] = []
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Make the thread look at its links now (a link has bytes its pipe did not take)."""
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"\0")

    def stop(self, timeout: float = 2.0) -> None:
        self._stopping = True
        self.wake()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def forget(self) -> None:
        """In a forked child: the thread did not survive the fork; close the inherited fds."""
        self._stopping = True
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _run(self) -> None:
        while not self._stopping:
            try:
                self._turn()
            except Exception:  # the pump must outlive any one bad turn
                log.exception("metricbus pump: unexpected error")

    def _turn(self) -> None:
        links = list(self.links)
        readable = [self._wake_r, *(fd for link in links if (fd := link.reply_fd) is not None)]
        writable = [fd for link in links if (fd := link.data_fd) is not None and link.backlog]
        try:
            ready, can_write, _ = select.select(readable, writable, [], self.interval)
        except (OSError, ValueError):  # a link closed its fds meanwhile
            ready, can_write = [], []
        if self._wake_r in ready:
            with contextlib.suppress(OSError):
                while os.read(self._wake_r, 4096):
                    pass
        for link in links:
            link.serve(readable=link.reply_fd in ready, writable=link.data_fd in can_write)
        for tick in list(self.ticks):
            tick()
