"""The Sink protocol: what a destination implements to receive batches from the bus.

Batching, retries, backpressure and error isolation live once, on the bus side (`_route.py`); a
sink only writes. Subclass `Sink`, implement `write_batch`, and register it with `bus.add_sink`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar, Literal

from ._events import Event
from ._rate import RateLimit

__all__ = ["Sink"]


class Sink(ABC):
    """A destination for events. The four methods are called one at a time (never concurrently),
    so a sink needs no locking of its own.

    They run on the sink's own thread and event loop, never the bus's (unless the sink says it
    never blocks, `blocking = False`): a sink may block (write a file, call an SDK) without
    holding up the bus or other sinks, and one that hangs is abandoned at `call_timeout` or at
    the shutdown deadline. Where that thread lives is `isolation`: a `MetricLogger` runs a sink
    in a sink host process (off the training process and its GIL) unless it must stay.
    """

    #: Event types this sink wants; others are never routed to it (and never counted for it).
    #: None means every type.
    accepts: ClassVar[tuple[type[Event], ...] | None] = None

    #: Where this sink runs unless `add_sink(isolate=...)` says otherwise: "host" (the shared sink
    #: host process), "process" (a sink host of its own: heavy sinks, much Python per event, that
    #: would starve the others) or "none" (the publishing process: a sink whose results the
    #: program reads, or that calls back into it). A sink that moves must pickle, with its class
    #: importable by reference; one that cannot stays in the publishing process. The async
    #: `MetricBus` keeps "host" sinks in its own process unless told otherwise.
    isolation: ClassVar[Literal["none", "host", "process"]] = "host"

    #: True (the default): the sink's methods may block, so they run on the sink's own thread,
    #: where a hang can be abandoned. False: they only await and never block (they touch memory,
    #: or wait on pipes and sockets), so the bus awaits them on its own loop, without a thread
    #: hop, and a deadline still cancels them.
    blocking: ClassVar[bool] = True

    #: The sink's own default rate limit (W&B wants fewer rows than TensorBoard); None: every
    #: event. `add_sink(rate=...)` overrides it.
    rate: ClassVar[RateLimit | None] = None

    #: How many times the sink restarted what it writes through (a worker process, a connection);
    #: shown in `SinkStats.restarts`.
    restarts: int = 0

    @property
    def output_dir(self) -> Path | None:
        """The folder this sink writes into (a file's directory, a logdir), or None. Its spool,
        and what it could not get saved at shutdown, go into `metricbus-spool/` there, beside
        its own output; a sink with none keeps them in the user's data directory."""
        return None

    def exclusive_paths(self) -> tuple[Path, ...]:
        """The files (or folders) this sink writes that no other process may write at the same
        time. The bus locks them for its process at `add_sink` (another process given one of them
        gets `InvalidConfig` there, naming the holder) and releases them when it closes; taking
        the lock also checks that the path can be written at all."""
        return ()

    @property
    def name(self) -> str:
        """The default name of this sink on a bus (`add_sink(..., name=...)` overrides it)."""
        return type(self).__name__

    async def open(self) -> None:
        """Acquire resources (open files, start runs). Called once before the first batch."""

    @abstractmethod
    async def write_batch(self, events: Sequence[Event]) -> int | None:
        """Write a batch. Raising means the whole batch failed: it is retried as a whole, and if it
        keeps failing it is split to find the events at fault (dropped as "rejected").

        Return None, or the number of events of this batch the sink refused for good (counted as
        dropped with reason "rejected"; say why in a log message). Anything else is a bug of the
        sink, reported as `InvalidSinkResult` and handled like a failed attempt."""

    async def flush(self) -> None:
        """Make everything written so far durable/visible (fsync-free; at least to the OS)."""

    async def close(self) -> None:
        """Flush and release resources. Called once, after the last batch."""
