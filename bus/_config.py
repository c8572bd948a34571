"""Per-sink delivery settings: buffer size, batching, when-full policy and retries.

One documented type used by every sink (Vector's `batch`/`buffer` settings play the same role).
"""

from __future__ import annotations

import math
from typing import Any, Literal, get_args

import msgspec

from ._errors import InvalidConfig
from ._rate import RateLimit

__all__ = ["RetryPolicy", "SinkConfig", "WhenFull", "sink_config"]

WhenFull = Literal["block", "drop_oldest", "drop_newest", "spill"]


class RetryPolicy(msgspec.Struct, frozen=True):
    """How a failing `write_batch` is retried: `max_attempts` tries in all, waiting
    `backoff * 2**n` seconds (capped at `max_backoff`) between them. When a batch still fails after
    the last attempt the sink is marked failed and everything it would have received is counted
    as dropped with reason "sink_failed"."""

    max_attempts: int = 5
    backoff: float = 0.05
    max_backoff: float = 2.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise InvalidConfig(f"max_attempts must be >= 1, got {self.max_attempts}")
        if not (0 <= self.backoff <= self.max_backoff):
            raise InvalidConfig(f"need 0 <= backoff <= max_backoff, got {self.backoff}, {self.max_backoff}")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        return float(min(self.max_backoff, self.backoff * 2 ** (attempt - 1)))


class SinkConfig(msgspec.Struct, frozen=True):
    """How the bus feeds one sink.

    capacity:     events buffered for this sink before `when_full` applies. Size it to cover the
                  longest pause you expect from the sink: at 10 scalars per 1 ms step a sink that
                  pauses for 0.5 s needs 5,000.
    max_batch:    most events handed to one `write_batch` call.
    max_interval: seconds an event may wait for a batch to fill before it is written anyway.
    when_full:    "block" (lossless; publishers wait), "drop_oldest", "drop_newest", or "spill"
                  (lossless, publishers never wait: the overflow goes to an on-disk spool in
                  `spool_dir`, at most `spool_limit` bytes, and back to the sink in order).
    spool_dir:    the sink's spool directory (default `metricbus-spool/<sink name>`); also where
                  what a failed or abandoned sink missed is saved, for `metricbus replay`.
    rate:         a `RateLimit`: fewer, reduced rows for this sink (None: every event).
    call_timeout: seconds one call of the sink (open, write_batch, flush, close) may take; past
                  it the sink is failed as hung, its events counted, and the bus moves on.
    """

    capacity: int = 10_000
    max_batch: int = 1_000
    max_interval: float = 1.0
    when_full: WhenFull = "block"
    retry: RetryPolicy = RetryPolicy()
    call_timeout: float = 120.0
    rate: RateLimit | None = None
    spool_dir: str | None = None
    spool_limit: int = 1 << 30

    def __post_init__(self) -> None:
        if self.when_full not in get_args(WhenFull):
            raise InvalidConfig(f"when_full must be one of {get_args(WhenFull)}, got {self.when_full!r}")
        if not isinstance(self.capacity, int) or self.capacity < 1:
            raise InvalidConfig(f"capacity must be an int >= 1, got {self.capacity!r}")
        if not isinstance(self.max_batch, int) or not self.max_batch >= 1:
            raise InvalidConfig(f"max_batch must be an int >= 1, got {self.max_batch!r}")
        if not (self.max_interval > 0 and math.isfinite(self.max_interval)):
            raise InvalidConfig(f"max_interval must be a positive number of seconds, got {self.max_interval!r}")
        if not isinstance(self.spool_limit, int) or self.spool_limit < 1:
            raise InvalidConfig(f"spool_limit must be an int >= 1 (bytes), got {self.spool_limit!r}")
        if not (self.call_timeout > 0 and math.isfinite(self.call_timeout)):
            raise InvalidConfig(f"call_timeout must be a positive number of seconds, got {self.call_timeout!r}")


def sink_config(
    default_rate: RateLimit | None,
    *,
    capacity: int = 10_000,
    max_batch: int = 1_000,
    max_interval: float = 1.0,
    when_full: WhenFull = "block",
    retry: RetryPolicy | None = None,
    call_timeout: float = 120.0,
    rate: RateLimit | Literal["none"] | None = None,
    spool_dir: Any = None,
    config: SinkConfig | None = None,
) -> SinkConfig:
    """The SinkConfig that `add_sink(**options)` means: `config` as given, or one built from the
    individual settings. `rate` None keeps the sink's own `default_rate`; "none" turns it off."""
    if config is not None:
        return config
    return SinkConfig(
        capacity=capacity,
        max_batch=max_batch,
        max_interval=max_interval,
        when_full=when_full,
        retry=retry if retry is not None else RetryPolicy(),
        call_timeout=call_timeout,
        rate=default_rate if rate is None else None if rate == "none" else rate,
        spool_dir=None if spool_dir is None else str(spool_dir),
    )
