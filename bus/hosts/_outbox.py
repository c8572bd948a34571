"""Outbox: what a training process has shipped to one sink host and the host has not settled.

Every batch stays here until the host acknowledges it (every one of its sinks settled it): a host
that dies is sent them again, and what a host never settles (it was given up on, it froze, it did
not finish at close) is saved from here, so the training process can always account for it.
Control frames (a sink to run, FLUSH, CLOSE) travel in the same ordered stream but are forgotten
once written.

Memory is bounded: past `memory_limit` bytes of batch bodies, new bodies go to a spill file (one
append-only file in the link's state directory) and are read back when the pipe can take them.
A host that is frozen, dead or far behind costs disk, never unbounded memory and never an event.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .. import wire
from .._events import Event
from ..wire import Op

__all__ = ["Outbox"]

log = logging.getLogger("metricbus")

MEMORY_LIMIT = 64 << 20  # bytes of batch bodies kept in memory per host; the rest waits on disk
# Rows kept, uncounted, for the stats (counting costs the training thread nothing while the host
# keeps up); past this many, the oldest batches are counted by kind and their rows let go.
ROWS_LIMIT = 100_000


class _Entry:
    """One frame of the stream: a batch (`seq` > 0, kept until acknowledged) or a control frame
    (`seq` 0). A spilled batch's body is on disk at `offset` (`body` None)."""

    __slots__ = ("body", "events", "header", "items", "kinds", "offset", "seq", "size")

    def __init__(self, seq: int, header: bytes, body: bytes | None, items: Sequence[Any] | None) -> None:
        self.seq = seq
        self.header = header
        self.body = body
        self.size = len(header) + (len(body) if body is not None else 0)
        self.offset = -1
        self.items = items  # the rows, until the host's stats count them (or the body spills)
        self.events = len(items) if items is not None else 0
        self.kinds: dict[type[Event], int] | None = None

    def count(self) -> dict[type[Event], int]:
        """The batch's events by kind (counted once, when first asked)."""
        if self.kinds is None:
            self.kinds = wire.item_kinds(self.items or ())
            self.items = None
        return self.kinds


class Outbox:
    """The ordered stream to one host, and the batches it has not acknowledged. Not thread-safe:
    its link holds a lock around every call."""

    def __init__(self, spill_path: Path, *, memory_limit: int = MEMORY_LIMIT) -> None:
        self.spill_path = spill_path
        self.memory_limit = memory_limit
        self.retained: deque[_Entry] = deque()  # batches not acknowledged, oldest first
        self.memory = 0  # bytes of retained bodies in memory
        self.spilled = 0  # retained batches whose body is on disk
        self.backlog = 0  # bytes queued and not yet written to the pipe
        self.unwritten_events = 0  # events of the batches not yet (wholly) written
        self._queue: deque[_Entry] = deque()  # frames not yet (wholly) written, in order
        self._written = 0  # bytes of the queue's head already written
        self._head_body: bytes | None = None  # the head's body, read back from disk
        self._fd = -1
        self._end = 0  # the spill file's size
        self._spill_failed = False
        self._uncounted: deque[_Entry] = deque()  # batches still holding their rows, oldest first
        self._rows = 0  # how many rows they hold
        self.writing = True  # False once the host is gone for good: batches are only kept

    # ---- adding ----

    def add_control(self, frame: bytes) -> None:
        if not self.writing:
            return
        entry = _Entry(0, frame, b"", None)
        self._queue.append(entry)
        self.backlog += entry.size

    def add_batch(self, seq: int, body: bytes, items: Sequence[Any]) -> None:
        header = wire.HEADER.pack(len(body), Op.BATCH, seq)
        entry = _Entry(seq, header, body, items)
        if self.memory + len(body) > self.memory_limit and self._spill(entry, body):
            entry.count()  # the rows would hold the memory the spill saves
        else:
            self.memory += len(body)
            self._uncounted.append(entry)
            self._rows += len(items)
            while self._rows > ROWS_LIMIT:
                oldest = self._uncounted.popleft()
                self._rows -= oldest.events
                if oldest.items is not None:  # not let go already (the host's stats count it)
                    oldest.count()
        self.retained.append(entry)
        if self.writing:
            self._queue.append(entry)
            self.backlog += entry.size
            self.unwritten_events += len(items)

    def _spill(self, entry: _Entry, body: bytes) -> bool:
        """Put a body on disk; False (it stays in memory) if the disk refuses."""
        try:
            if self._fd < 0:
                self.spill_path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.spill_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
                self._end = 0
            view = memoryview(body)
            while view:
                n = os.pwrite(self._fd, view, self._end)
                self._end += n
                view = view[n:]
        except OSError as exc:
            if not self._spill_failed:
                self._spill_failed = True
                log.error("metricbus: cannot spill to %s (%r); batches stay in memory", self.spill_path, exc)
            return False
        entry.offset = self._end - len(body)
        entry.body = None
        self.spilled += 1
        return True

    def body(self, entry: _Entry) -> bytes:
        """A retained batch's body, from memory or from disk."""
        if entry.body is not None:
            return entry.body
        size = entry.size - len(entry.header)
        return os.pread(self._fd, size, entry.offset)

    # ---- writing to the host ----

    def write(self, fd: int) -> bool:
        """Write what the pipe takes now, without blocking; True if something is left. Raises
        OSError when the host's end is gone."""
        queue = self._queue
        while queue:
            views = self._views()
            try:
                n = os.writev(fd, views)
            except BlockingIOError:
                return True
            self.backlog -= n
            while n:
                head = queue[0]
                left = head.size - self._written
                if n < left:
                    self._written += n
                    return True  # the pipe took part of it: it is full
                n -= left
                queue.popleft()
                self._written = 0
                self._head_body = None
                if head.seq:
                    self.unwritten_events -= head.events
        return False

    def _views(self) -> list[memoryview]:
        """The next frames to write, as views (a spilled body only when it is first in line)."""
        views: list[memoryview] = []
        for i, entry in enumerate(itertools.islice(self._queue, 64)):
            body = entry.body
            if body is None:
                if i:
                    break
                if self._head_body is None:
                    self._head_body = self.body(entry)
                body = self._head_body
            views.append(memoryview(entry.header))
            if body:
                views.append(memoryview(body))
        skip = self._written
        while skip:
            if skip < len(views[0]):
                views[0] = views[0][skip:]
                break
            skip -= len(views.pop(0))
        return views

    # ---- the host's answers ----

    def ack(self, seq: int) -> None:
        """Every batch up to `seq` is settled: forget them."""
        retained = self.retained
        while retained and retained[0].seq <= seq:
            entry = retained.popleft()
            if self._uncounted and self._uncounted[0] is entry:
                self._uncounted.popleft()
                self._rows -= entry.events
            if entry.body is not None:
                self.memory -= len(entry.body)
            else:
                self.spilled -= 1
        if not self.spilled and self._fd >= 0 and self._end:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            self._end = 0

    def requeue(self, frames: Sequence[bytes | _Entry]) -> None:
        """A new host: the stream starts over with `frames` (control frames and retained batches,
        in the order the new host needs them)."""
        self._queue = deque(f if isinstance(f, _Entry) else _Entry(0, f, b"", None) for f in frames)
        self._written = 0
        self._head_body = None
        self.backlog = sum(entry.size for entry in self._queue)
        self.unwritten_events = sum(e.events for e in self._queue if e.seq)

    def stop_writing(self) -> None:
        """Nothing more will be written (the host is gone for good): keep only what to save."""
        self.writing = False
        self._queue.clear()
        self._written = 0
        self._head_body = None
        self.backlog = 0
        self.unwritten_events = 0

    def unacknowledged(self) -> Iterator[tuple[int, bytes]]:
        """(seq, body) of every retained batch, oldest first."""
        for entry in list(self.retained):
            yield entry.seq, self.body(entry)

    def close(self) -> None:
        self.retained.clear()
        self._uncounted.clear()
        self._rows = 0
        self.stop_writing()
        self.memory = self.spilled = 0
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1
            self.spill_path.unlink(missing_ok=True)
