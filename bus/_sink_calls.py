"""SinkCalls: calling one sink, in one place: where its code runs, the call timeout, the retries,
and what a failure means.

A sink whose methods may block runs on its own `SinkThread`, so a call can be abandoned at
`call_timeout` (or at the shutdown deadline) and a hung sink never holds the bus; a sink that
only awaits (`Sink.blocking = False`) is awaited on the bus's own loop. A failed call means one
of two things:

- **the sink is down** (`is_down`: OSError and kin, a full disk, a refused connection, a timeout):
  `Down` at once, no retry here; the route keeps the events and probes the sink later;
- **anything else**: retried with the `RetryPolicy`'s backoff, then `Failed`; a call that does not
  return within `call_timeout` is `Failed(hung=True)` at once.

The route decides what to do about it (wait out an outage, split a failing batch, fail the sink);
this class only calls and counts.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio

from ._config import SinkConfig
from ._errors import InvalidSinkResult
from ._events import Event
from ._file_locks import RUNTIME_MISTAKES
from ._sink import Sink
from ._sink_thread import SinkThread

__all__ = ["Down", "Failed", "SinkCalls", "is_down"]

log = logging.getLogger("metricbus")


def is_down(exc: BaseException) -> bool:
    """Does this failure say the destination is down (rather than that the events are bad, or the
    sink was set up wrong)? OSError and its kin: a full disk, a missing share, a refused
    connection, a timeout; not a path that can never be written (a folder given for a file, a
    read-only filesystem, no permission): that is a mistake, and the sink fails."""
    return isinstance(exc, OSError) and exc.errno not in RUNTIME_MISTAKES  # ConnectionError, TimeoutError too


class Failed(Exception):
    """An attempt (after its retries) did not succeed; `hung` when the sink stopped answering."""

    def __init__(self, hung: bool) -> None:
        self.hung = hung


class Down(Exception):
    """The sink is down (see `is_down`)."""


class SinkCalls:
    """The calls of one sink, with their counters (for its stats)."""

    def __init__(self, name: str, sink: Sink, config: SinkConfig) -> None:
        self.name = name
        self.sink = sink
        self.config = config
        self.failed_attempts = 0
        self.failures_in_a_row = 0  # attempts (after retries) that failed since the last success
        self.last_error: str | None = None
        self.calling: str | None = None  # the sink method being awaited, for hang reports
        self._thread: SinkThread | None = None

    def start(self) -> None:
        """Give a sink that may block its own thread (once its route runs)."""
        if self.sink.blocking:
            self._thread = SinkThread(self.name)

    def stop(self) -> None:
        if self._thread is not None:
            self._thread.stop()

    async def attempt(self, what: str, call: Callable[..., Awaitable[Any]], *args: Any, retry: bool = True) -> Any:
        """Call a sink method with the retry policy; raise `Down` at once when the sink is down,
        `Failed` when it keeps failing otherwise, or at once when it does not answer within the
        call timeout."""
        policy = self.config.retry
        attempts = policy.max_attempts if retry else 1
        for attempt in range(1, attempts + 1):
            self.calling = what
            try:
                with anyio.move_on_after(self.config.call_timeout) as deadline:
                    result = await (self._thread.call(call, *args) if self._thread is not None else call(*args))
                if deadline.cancelled_caught:
                    self.failed_attempts += 1
                    self.last_error = f"{what} did not return within call_timeout={self.config.call_timeout}s (hung)"
                    log.error("sink %r: %s", self.name, self.last_error)
                    raise Failed(hung=True)
            except Failed:
                raise
            except Exception as exc:  # a sink's failure is data for the stats, never the caller's
                self.failed_attempts += 1
                self.last_error = f"{what}: {type(exc).__name__}: {exc}"
                if is_down(exc):
                    raise Down from exc
                log.warning("sink %r: %s failed (attempt %d of %d): %r", self.name, what, attempt, attempts, exc)
                if attempt < attempts:
                    await anyio.sleep(policy.delay(attempt))
                continue
            finally:
                self.calling = None
            self.failures_in_a_row = 0
            return result
        self.failures_in_a_row += 1
        raise Failed(hung=False)

    async def write_batch(self, events: Sequence[Event]) -> int:
        """The sink's write_batch, with its result checked: None or a count of refused events."""
        result = await self.sink.write_batch(events)
        if result is None:
            return 0
        if type(result) is not int or not 0 <= result <= len(events):
            raise InvalidSinkResult(
                f"write_batch returned {result!r}; it must return None or the number of events "
                f"it refused (0..{len(events)})"
            )
        return result
