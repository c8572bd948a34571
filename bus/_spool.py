"""Spool: a sink's events on disk, in order, in segment files of `bus.wire` frames.

A route spills here what its memory cannot hold: with `when_full="spill"`, and for any sink
while it is down. Segments are written whole (a temporary file, fsync, then a rename), so a
crash leaves only whole segments, and the next bus with the same spool directory delivers them
first. `read_spool` gives back the events of a spool directory, for `metricbus replay`.

`Spool` never touches the disk itself: `append` keeps events in memory, and the route task
writes and reads segments with the blocking functions here, on a worker thread, so that a slow
or dead disk never stalls the bus's loop (or a publisher).
"""

from __future__ import annotations

import logging
import os
import re
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path

from . import wire
from ._events import Event

__all__ = [
    "SPOOL_DIR",
    "Spool",
    "load_segment",
    "read_segment",
    "read_segments",
    "read_spool",
    "save_events",
    "scan",
    "spool_dir_of",
    "spool_home",
    "write_segment",
]

log = logging.getLogger("metricbus")

SPOOL_DIR = "metricbus-spool"  # the folder, beside a sink's output, for what the sink could not take yet

_PREFIX, _SUFFIX = "segment-", ".msgpack"  # segment-<seq>-<events>.msgpack
_TAIL_BYTES = 64  # what an event still in memory is taken to weigh against the limit
_FIRST_SEQ = 10**11  # room below it for segments written back in front of the others


def _segments(directory: Path) -> list[Path]:
    return sorted(directory.glob(f"{_PREFIX}*{_SUFFIX}"))


def _seq(path: Path) -> int:
    return int(path.name[len(_PREFIX) : -len(_SUFFIX)].split("-")[0])


def _count(path: Path) -> int:
    """How many events a segment holds, from its name (a name without the count: by reading it)."""
    parts = path.name[len(_PREFIX) : -len(_SUFFIX)].split("-")
    return int(parts[1]) if len(parts) > 1 else len(read_segment(path))


def read_segment(path: Path) -> list[Event]:
    """The events of one segment file (blocking)."""
    data = path.read_bytes()
    events: list[Event] = []
    for _op, _number, body in wire.iter_frames(data):
        events.extend(wire.decode(body))
    return events


def load_segment(path: Path) -> list[Event]:
    """Read a segment back and remove its file (blocking): its events are in memory from now on."""
    events = read_segment(path)
    path.unlink(missing_ok=True)
    return events


def write_segment(directory: Path, events: Sequence[Event], *, first: bool = False) -> tuple[Path, int]:
    """Write `events` as a whole segment of a spool directory: the newest, or with `first` the
    oldest (events read back but not delivered go before everything on disk). Returns its path
    and size (blocking)."""
    directory.mkdir(parents=True, exist_ok=True)
    existing = _segments(directory)
    seq = _FIRST_SEQ
    if existing:
        seq = _seq(existing[0]) - 1 if first else _seq(existing[-1]) + 1
    data = wire.frame(wire.Op.BATCH, seq, wire.encode_events(events))
    path = directory / f"{_PREFIX}{seq:012d}-{len(events)}{_SUFFIX}"
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    return path, len(data)


def _safe(name: str) -> str:
    """A sink name as one directory name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "sink"


def spool_home() -> Path:
    """Where sinks with no output of their own keep their spool: the user's data directory
    (never the current directory of a script that writes elsewhere)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "metricbus" / "spool"


def spool_dir_of(name: str, output_dir: Path | None, configured: str | None) -> Path:
    """A sink's spool directory: as configured, else beside its own output, else in the user's
    data directory; one folder per sink name."""
    if configured:
        return Path(configured)
    return (Path(output_dir) / SPOOL_DIR if output_dir is not None else spool_home()) / _safe(name)


def save_events(directory: Path, name: str, events: Sequence[Event], *, first: bool = False) -> Path | None:
    """Save events a sink will not get as a segment of `directory`, for `metricbus replay`; if that
    folder cannot be written (it is inside the broken path), in the user's data directory instead.
    Returns the folder they are in, or None if neither could be written (logged). Blocking."""
    for folder in (directory, spool_home() / _safe(name)):
        try:
            write_segment(folder, events, first=first)
        except OSError as exc:
            log.error("metricbus: cannot save %d events of sink %r in %s: %r", len(events), name, folder, exc)
            continue
        return folder
    return None


def scan(directory: Path) -> list[tuple[Path, int, int]]:
    """(path, events, bytes) of each segment a previous run left, oldest first, from a listing
    of the directory; drops half-written ones (blocking, but quick: no segment is read)."""
    if not directory.exists():
        return []
    for stale in directory.glob("*.tmp"):  # a segment that never got its rename
        stale.unlink()
    return [(path, _count(path), path.stat().st_size) for path in _segments(directory)]


def read_spool(directory: str | Path) -> Iterator[Event]:
    """Every event a spool directory holds, oldest first."""
    for _, events in read_segments(directory):
        yield from events


def read_segments(directory: str | Path) -> Iterator[tuple[int, list[Event]]]:
    """(bytes, events) of each segment of a spool directory, oldest first."""
    for path in _segments(Path(directory)):
        yield path.stat().st_size, read_segment(path)


class Spool:
    """The on-disk part of one sink's queue, oldest first: a head read back from disk, the
    segment files, and a tail still in memory. `limit_bytes` bounds the files (past it, `append`
    refuses). Only the route's task changes it; the disk work it asks for runs elsewhere."""

    def __init__(self, directory: Path, *, limit_bytes: int, segment_events: int = 10_000) -> None:
        self.directory = directory
        self.limit_bytes = limit_bytes
        self.segment_events = segment_events
        self.count = 0  # events held: head, files and tail
        self.bytes = 0  # bytes of the segment files
        self.files: deque[tuple[Path, int, int]] = deque()  # (path, events, bytes), oldest first
        self.head: deque[Event] = deque()  # the oldest segment, read back
        self.tail: list[Event] = []

    def adopt(self, segments: list[tuple[Path, int, int]]) -> int:
        """Take the segments a previous run left (from `scan`); returns how many events they hold."""
        for path, n, size in segments:
            self.files.append((path, n, size))
            self.count += n
            self.bytes += size
        return sum(n for _, n, _ in segments)

    def append(self, events: Sequence[Event]) -> int:
        """Keep `events` at the tail (in memory); returns how many fit under the limit."""
        if self.bytes + _TAIL_BYTES * len(self.tail) > self.limit_bytes:
            return 0
        self.tail.extend(events)
        self.count += len(events)
        return len(events)

    @property
    def tail_full(self) -> bool:
        return len(self.tail) >= self.segment_events

    def detach_tail(self) -> list[Event]:
        """The oldest `segment_events` of the tail, to be written as a segment; `written` files
        it once it is on disk."""
        tail, self.tail = self.tail[: self.segment_events], self.tail[self.segment_events :]
        return tail

    def written(self, path: Path, n: int, size: int) -> None:
        self.files.append((path, n, size))
        self.bytes += size

    def unwritten(self, events: list[Event]) -> None:
        """A detached tail could not be written: it stays in memory, in front of the new tail."""
        self.tail[:0] = events

    def give_up(self) -> int:
        """The sink will never take what is here: forget the files (they stay on disk, saved for
        replay) and the count; returns how many events they hold. Memory must be empty."""
        n = self.count
        self.files.clear()
        self.count = self.bytes = 0
        return n

    def take(self, n: int) -> list[Event]:
        """Up to `n` of the oldest events that are in memory (the head, or, once no file is left,
        the tail)."""
        out: list[Event] = []
        if not self.head and not self.files and self.tail:
            self.head.extend(self.tail)
            self.tail.clear()
        while len(out) < n and self.head:
            k = min(n - len(out), len(self.head))
            out.extend(self.head.popleft() for _ in range(k))
        self.count -= len(out)
        return out

    def next_file(self) -> Path | None:
        """The oldest segment file, if the head is empty and one waits: `load_segment` it and
        hand the events to `loaded`."""
        if self.head or not self.files:
            return None
        return self.files[0][0]

    def loaded(self, events: list[Event]) -> None:
        _, _, size = self.files.popleft()
        self.head.extend(events)
        self.bytes -= size
