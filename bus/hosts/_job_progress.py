"""The job host's progress record: what each of its sinks has settled, by identity.

A private host's record (`_progress.py`) counts one trainer's batches per sink. A job host's
sinks get an interleaving of every rank's events and the job's rows that no rank could replay in
the same order, so its record names what was settled instead:

- per sink and per rank's logger (its rank, pid and link: a rank started again, or a second
  logger of it, numbers its batches anew), the last of its events settled, as (batch number,
  index in the batch): the events of one logger reach a sink in that order, so everything
  before it was settled too;
- per sink and per job (`origin.site`), the steps whose row was settled, as ranges of steps
  (the most recent `RECENT`, as many as the reducer remembers as closed).

A host started after a crash reads it (`JobRecord.adopt`) and skips, per sink, what its
predecessor settled; the steps whose row every sink settled are not reduced again. The record
lives in the job's run directory beside the socket and is removed when a host exits with no rank
connected (a later phase of the job starts clean).
"""

from __future__ import annotations

import bisect
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import msgspec

__all__ = ["RECENT", "JobProgress", "JobRecord", "RouteProgress", "Steps", "pid_alive"]

RECENT = 4096  # steps remembered per sink and job (the reducer's own memory of closed steps)


class Steps:
    """A set of step numbers kept as sorted, disjoint, inclusive ranges [[lo, hi], ...]: a run's
    steps are mostly consecutive, so the record stays a few numbers long. At most `limit` steps
    are kept; above that the lowest go first."""

    __slots__ = ("count", "limit", "ranges")

    def __init__(self, ranges: list[list[int]] | None = None, limit: int = RECENT) -> None:
        self.ranges: list[list[int]] = [list(r) for r in ranges or ()]
        self.count = sum(hi - lo + 1 for lo, hi in self.ranges)
        self.limit = limit

    def __contains__(self, step: int) -> bool:
        i = bisect.bisect_right(self.ranges, [step, float("inf")]) - 1
        return i >= 0 and self.ranges[i][1] >= step

    def __iter__(self) -> Iterator[int]:
        for lo, hi in self.ranges:
            yield from range(lo, hi + 1)

    def add(self, step: int) -> None:
        ranges = self.ranges
        if ranges and ranges[-1][1] + 1 == step:  # the usual case: the next step
            ranges[-1][1] = step
        elif step in self:
            return
        else:
            i = bisect.bisect_left(ranges, [step, step])
            joins_before = i > 0 and ranges[i - 1][1] + 1 == step
            joins_after = i < len(ranges) and ranges[i][0] - 1 == step
            if joins_before and joins_after:
                ranges[i - 1][1] = ranges[i][1]
                del ranges[i]
            elif joins_before:
                ranges[i - 1][1] = step
            elif joins_after:
                ranges[i][0] = step
            else:
                ranges.insert(i, [step, step])
        self.count += 1
        while self.count > self.limit:
            lo, hi = ranges[0]
            drop = min(hi - lo + 1, self.count - self.limit)
            self.count -= drop
            if drop == hi - lo + 1:
                del ranges[0]
            else:
                ranges[0][0] = lo + drop


class RouteProgress(msgspec.Struct):
    """One sink's settled state: `ranks` {"rank/pid/link": [batch, index]}, the last event of each rank
    settled; `rows` {site: [[lo, hi], ...]}, the steps whose job row was settled; `mark`, where
    the sink's output ended with them (a file sink's `output_mark`), to which a successor cuts it
    back: what a host wrote and had not recorded yet when it was killed is not there twice.
    `writing`: how many events the sink was writing past those; a sink with no mark may hold them
    when the host is killed, and its successor says so (they are sent again: at least once)."""

    ranks: dict[str, tuple[int, int]] = {}
    rows: dict[str, list[list[int]]] = {}
    mark: int | None = None  # the sink's `output_mark` then (a file sink: where its file ended)
    writing: int = 0  # events handed to the sink past what it settled: a crash may leave them written


class JobProgress(msgspec.Struct):
    """The record: `pids`, the ranks that may send again what it covers (a successor adopts it
    only while one of them lives); `routes`, each sink's settled state by its name."""

    pids: list[int] = []
    routes: dict[str, RouteProgress] = {}


def pid_alive(pid: int) -> bool:
    """True if a process of this pid exists (a rank that may send its batches again)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class JobRecord:
    """The record's file: one length-prefixed msgpack blob rewritten in place (a single pwrite,
    which a kill cannot tear), as a private host's record is."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / "progress"
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._last = b""
        self._removed = False

    def adopt(self) -> JobProgress:
        """The dead predecessor's record, if one of its ranks still lives (they will send again
        what it did not acknowledge); otherwise an empty one (a stale record of an earlier run of
        the job's ranks is not this run's)."""
        data = os.pread(self._fd, 1 << 24, 0)
        progress = JobProgress()
        if len(data) >= 4:
            size = int.from_bytes(data[:4], "little")
            with contextlib.suppress(msgspec.DecodeError):
                progress = msgspec.msgpack.decode(data[4 : 4 + size], type=JobProgress)
        if not any(pid_alive(pid) for pid in progress.pids):
            return JobProgress()
        return progress

    def write(self, progress: JobProgress) -> None:
        body = msgspec.msgpack.encode(progress)
        if body != self._last and not self._removed:
            os.pwrite(self._fd, len(body).to_bytes(4, "little") + body, 0)
            self._last = body

    def remove(self) -> None:
        """No rank will send anything again: the next host of this job starts clean."""
        self._removed = True
        with contextlib.suppress(OSError):
            self.path.unlink()
        with contextlib.suppress(OSError):
            os.close(self._fd)
