"""Spool: a bounded on-disk FIFO of events for one sink, in msgpack segment files.

With `when_full="spill"` the events a full sink cannot take go here instead of stalling the
publisher or being dropped, and come back to the sink in order as it catches up. Segments are
written whole (a temporary file, then a rename), so a crash leaves only whole segments, and the
next bus with the same spool directory delivers them first. `read_spool` gives the events of a
spool directory back, for `metricbus replay`.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator
from pathlib import Path

from ._events import Event
from ._wire import HEADER, decode_batch, encode_batch

__all__ = ["Spool", "read_segments", "read_spool", "write_segment"]

_PREFIX, _SUFFIX = "segment-", ".msgpack"
_FIRST_SEQ = 10**11  # room below it for segments written back in front of the others


def _segments(directory: Path) -> list[Path]:
    return sorted(directory.glob(f"{_PREFIX}*{_SUFFIX}"))


def _read_segment(path: Path) -> list[Event]:
    data = path.read_bytes()
    events: list[Event] = []
    offset = 0
    while offset + HEADER.size <= len(data):
        (size,) = HEADER.unpack_from(data, offset)
        offset += HEADER.size
        events.extend(decode_batch(data[offset : offset + size]))
        offset += size
    return events


def _seq(path: Path) -> int:
    return int(path.name[len(_PREFIX) : -len(_SUFFIX)])


def write_segment(directory: Path, events: list[Event], *, first: bool = False) -> Path:
    """Write `events` as a whole segment of a spool directory: the newest, or with `first` the
    oldest (events read back but not delivered go before everything on disk); returns its path."""
    directory.mkdir(parents=True, exist_ok=True)
    existing = _segments(directory)
    seq = _FIRST_SEQ
    if existing:
        seq = _seq(existing[0]) - 1 if first else _seq(existing[-1]) + 1
    body = encode_batch(events)
    path = directory / f"{_PREFIX}{seq:012d}{_SUFFIX}"
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(HEADER.pack(len(body)) + body)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    return path


def read_spool(directory: str | Path) -> Iterator[Event]:
    """Every event a spool directory holds, oldest first."""
    for _, events in read_segments(directory):
        yield from events


def read_segments(directory: str | Path) -> Iterator[tuple[int, list[Event]]]:
    """(bytes, events) of each segment of a spool directory, oldest first."""
    for path in _segments(Path(directory)):
        yield path.stat().st_size, _read_segment(path)


class Spool:
    """The on-disk overflow of one sink: `append` at the tail, `take` from the head.

    The tail collects in memory and is written as one segment every `segment_events` events (and
    at `close`); `limit_bytes` bounds the segments on disk (past it, `append` returns False)."""

    def __init__(self, directory: Path, *, limit_bytes: int, segment_events: int = 10_000) -> None:
        self.directory = directory
        self.limit_bytes = limit_bytes
        self.segment_events = segment_events
        self.count = 0  # events held, on disk and in memory
        self._bytes = 0
        self._files: deque[tuple[Path, int, int]] = deque()  # (path, events, bytes), oldest first
        self._head: deque[Event] = deque()  # the oldest segment, read back
        self._tail: list[Event] = []

    def open(self) -> int:
        """Pick up the segments a previous run left; returns how many events they hold."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for stale in self.directory.glob("*.tmp"):  # a segment that never got its rename
            stale.unlink()
        for path in _segments(self.directory):
            n = len(_read_segment(path))
            size = path.stat().st_size
            self._files.append((path, n, size))
            self.count += n
            self._bytes += size
        return self.count

    def append(self, event: Event) -> bool:
        if self._bytes > self.limit_bytes:
            return False
        self._tail.append(event)
        self.count += 1
        if len(self._tail) >= self.segment_events:
            self._write_tail()
        return True

    def take(self, n: int) -> list[Event]:
        """Up to `n` of the oldest events."""
        out: list[Event] = []
        while len(out) < n and self.count:
            if not self._head:
                if self._files:
                    path, _, size = self._files.popleft()
                    self._head.extend(_read_segment(path))
                    path.unlink()
                    self._bytes -= size
                else:
                    self._head.extend(self._tail)
                    self._tail.clear()
            k = min(n - len(out), len(self._head))
            out.extend(self._head.popleft() for _ in range(k))
            self.count -= k
        return out

    def close(self) -> list[Path]:
        """Write what is still in memory to disk, in order, so it survives; returns the files."""
        written = []
        if self._head:
            written.append(write_segment(self.directory, list(self._head), first=True))
            self._head.clear()
        if self._tail:
            written.append(write_segment(self.directory, self._tail))
            self._tail = []
        self._files.clear()
        return written

    def _write_tail(self) -> None:
        path = write_segment(self.directory, self._tail)
        size = path.stat().st_size
        self._files.append((path, len(self._tail), size))
        self._bytes += size
        self._tail = []
