"""Immutable per-sink statistics: what the bus did with every event it was given."""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Any

import msgspec

__all__ = ["DropReason", "SinkState", "SinkStats", "accepted_share"]


class SinkState(str, Enum):
    """Lifecycle of one sink on a bus."""

    PENDING = "pending"  # added, its task not started yet
    OPEN = "open"
    DOWN = "down"  # its destination does not answer: its events are kept and it is probed
    FAILED = "failed"  # gave up after retries; its events are counted as dropped
    CLOSED = "closed"


class DropReason(str, Enum):
    """Why an event did not reach a sink."""

    FULL = "full"  # the buffer was full and the policy said drop (drop_oldest / drop_newest)
    SINK_FAILED = "sink_failed"  # the sink failed (open or retries exhausted)
    SINK_DOWN = "sink_down"  # the sink was still down when the bus closed (saved for replay)
    SHUTDOWN_TIMEOUT = "shutdown_timeout"  # still queued when the shutdown grace period ran out
    REJECTED = "rejected"  # the sink refused the event, or it failed on its own (why: last_error)
    SPOOL_FULL = "spool_full"  # a `spill` sink's spool reached its `spool_limit`


class SinkStats(msgspec.Struct, frozen=True):
    """One sink's counters at one moment. Always:
    published == delivered + dropped + reduced + queued + in_flight."""

    name: str
    state: SinkState
    published: int
    delivered: int
    dropped: dict[str, int]
    queued: int
    in_flight: int
    batches: int
    failed_attempts: int
    last_error: str | None = None
    restarts: int = 0  # the sink restarted its backend (a worker process, a connection)
    reduced: int = 0  # folded by the sink's rate limit into another event's row (not lost)
    saved_to: str | None = None  # the spool directory holding what a failed sink missed
    saved: int = 0  # how many of the events it missed are saved there (for `metricbus replay`)
    where: str = "local"  # where the sink runs: "local" (the publishing process) or "host <name>"
    down_since: float | None = None  # wall time since which the sink is down (None: it is up)
    spooled_bytes: int = 0  # bytes of its events waiting in its spool on disk
    lag: float = 0.0  # seconds since the oldest event it holds was logged (0: it holds none)

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    @property
    def balanced(self) -> bool:
        """True when every published event is accounted for."""
        return self.published == self.delivered + self.dropped_total + self.reduced + self.queued + self.in_flight


def accepted_share(kinds: Mapping[type[Any], int], accepts: frozenset[type[Any]] | None) -> int:
    """How many of these events (counted by kind) a sink that takes `accepts` (None: all) takes."""
    if accepts is None:
        return sum(kinds.values())
    return sum(n for kind, n in kinds.items() if kind in accepts)
