"""SinkBuffer: the events a sink has not been handed yet, and the when-full policy, in one place.

Up to `capacity` events wait in memory. What does not fit:

    block        waits: publishers check `room()` first (the logger counts what it gave up on)
    drop_oldest  the oldest events go, counted as "full"
    drop_newest  the new events go, counted as "full"
    spill        goes to the sink's spool on disk, in order; publishers never wait

and, whatever the policy, while the sink is down (`spilling` set by its route) the overflow goes
to the spool: a down sink is only behind, and the loop never waits on it. Once anything is in the
spool, everything after it goes there too, so the order holds. Past the spool's limit events are
counted as "spool_full". `put` takes one event or many: the same code decides for both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from ._config import SinkConfig
from ._events import Event
from ._spool import Spool
from ._stats import DropReason

__all__ = ["SinkBuffer"]

_UNLIMITED = 1 << 62


class SinkBuffer:
    def __init__(self, config: SinkConfig, spool_dir: Path, drop: Callable[[DropReason, int], None]) -> None:
        self.capacity = config.capacity
        self.policy = config.when_full
        # a list, not a deque: a batch leaves from the front as one slice. The memmove `del
        # mem[:n]` costs is ~5 ns an event at the default capacity (10,000) against ~100 ns for
        # n poplefts; they break even near 100,000 events waiting.
        self.mem: list[Event] = []
        self.spool = Spool(spool_dir, limit_bytes=config.spool_limit)
        self.spilling = config.when_full == "spill"  # also while the sink is down
        self._drop = drop

    def __len__(self) -> int:
        return len(self.mem) + self.spool.count

    @property
    def spooled(self) -> int:
        return self.spool.count

    def room(self) -> int:
        """How many more events fit before a `block` sink makes its publishers wait."""
        if self.spilling:
            return _UNLIMITED
        return max(0, self.capacity - len(self.mem))

    def put(self, events: Sequence[Event]) -> None:
        """Take events in order, applying the when-full policy to what does not fit."""
        mem = self.mem
        if self.spool.count:  # something is on disk already: whatever comes after follows it
            self._spill(events)
            return
        free = self.capacity - len(mem)
        if len(events) <= free:
            mem.extend(events)
            return
        if self.spilling:
            mem.extend(events[:free])
            self._spill(events[free:])
            return
        if self.policy == "drop_newest":
            keep = max(0, free)
            mem.extend(events[:keep])
            self._drop(DropReason.FULL, len(events) - keep)
            return
        # drop_oldest (and a block sink given more than its room): the newest `capacity` survive
        overflow = len(mem) + len(events) - self.capacity
        from_mem = min(overflow, len(mem))
        del mem[:from_mem]
        mem.extend(events[overflow - from_mem :])
        self._drop(DropReason.FULL, overflow)

    def _spill(self, events: Sequence[Event]) -> None:
        kept = self.spool.append(events)
        if kept < len(events):
            self._drop(DropReason.SPOOL_FULL, len(events) - kept)

    def take(self, n: int) -> list[Event]:
        """Up to `n` of the oldest events in memory."""
        mem = self.mem
        taken = mem[:n]
        del mem[:n]
        return taken

    def refill(self) -> bool:
        """Move what the spool has in memory into the buffer while there is room; True if the
        spool has more (on disk) once the buffer has room again."""
        free = self.capacity - len(self.mem)
        if free > 0 and self.spool.count:
            self.mem.extend(self.spool.take(free))
        return bool(self.spool.count)

    def oldest_wall_time(self) -> float | None:
        if self.mem:
            return self.mem[0].wall_time
        head = self.spool.head or self.spool.tail
        return head[0].wall_time if head else None

    def clear(self) -> tuple[list[Event], list[Event]]:
        """Everything held in memory, emptied out: what is older than the spool's files (the
        buffer, the spool's head) and what is newer (the spool's tail). The files stay."""
        spool = self.spool
        older, newer = [*self.mem, *spool.head], list(spool.tail)
        self.mem.clear()
        spool.count -= len(spool.head) + len(spool.tail)
        spool.head.clear()
        spool.tail.clear()
        return older, newer
