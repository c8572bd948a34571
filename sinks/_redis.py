"""RedisSink: the producing side of the Redis bridge. Each batch the bus hands it becomes one
entry of a Redis Stream, which `producers.RedisSource` reads on the aggregator.

An entry's layout is `sinks.redis_bridge`: the format version, this producer's id, the batch's
sequence number (1, 2, 3, ... per producer id) and the events as a `bus.wire` body. A batch
that is retried keeps its sequence number, so when a first attempt did land in Redis (the reply
was lost) the aggregator sees the same (producer id, sequence) twice and skips the second.

The sink only awaits redis-py's asyncio client (sockets, never a blocking call), so it says
`blocking = False` and the bus awaits it on its own loop, without a thread hop; a deadline
cancels a hung call like any other. It never retries by itself: a failed XADD raises, and the route's `RetryPolicy`
waits and calls again, on a fresh connection. Give it a policy that covers the Redis outages you
expect to ride out (the default one covers about a second): `retry=RetryPolicy(max_attempts=40,
max_backoff=0.5)` is 20 s. Reconnections are counted in `SinkStats.restarts`.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Sequence
from typing import Any

from bus import Event, InvalidConfig, Sink

from .redis_bridge import check_name, check_url, entry_fields, redact_url, scrub

__all__ = ["RedisSink", "default_producer_id"]


def default_producer_id() -> str:
    """'host-pid-random': unique per process, so a restarted producer starts a new sequence."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class RedisSink(Sink):
    """Write every batch as one entry of the stream `stream` at `url` (redis://, rediss:// for
    TLS, unix://; a password in the URL works and is never shown). `maxlen` bounds the stream:
    each XADD trims it to about that many entries (MAXLEN ~), so Redis memory stays bounded even
    when no aggregator reads; an aggregator more than `maxlen` entries behind loses the oldest
    (counted as gaps in `RedisSource.stats()`)."""

    blocking = False  # only awaits the asyncio client: served on the bus's loop

    def __init__(
        self,
        url: str,
        *,
        stream: str = "metricbus",
        maxlen: int = 10_000,
        producer_id: str | None = None,
        socket_timeout: float = 5.0,
    ) -> None:
        self.url = check_url(url)
        self.stream = check_name(stream, "stream")
        if not isinstance(maxlen, int) or maxlen < 1:
            raise InvalidConfig(f"maxlen must be an int >= 1, got {maxlen!r}")
        if not socket_timeout > 0:
            raise InvalidConfig(f"socket_timeout must be > 0 seconds, got {socket_timeout!r}")
        self.maxlen = maxlen
        self.producer_id = check_name(producer_id, "producer_id") if producer_id is not None else default_producer_id()
        self.socket_timeout = socket_timeout
        self.seq = 0  # the sequence number of the last batch handed to write_batch
        self._batch: Sequence[Event] | None = None  # that batch: the route retries with the same list
        self._client: Any = None
        self._broken = False  # the last call failed: the next one that works has reconnected

    @property
    def name(self) -> str:
        return f"redis:{redact_url(self.url)}/{self.stream}"

    async def open(self) -> None:
        """Make the client; it connects on the first write, so Redis may come up after the bus."""
        import redis.asyncio

        self._client = redis.asyncio.from_url(
            self.url, socket_timeout=self.socket_timeout, socket_connect_timeout=self.socket_timeout
        )

    async def write_batch(self, events: Sequence[Event]) -> None:
        import redis

        if events is not self._batch:  # a new batch; a retry is the same list again
            self.seq += 1
            self._batch = events
        fields = entry_fields(self.producer_id, self.seq, events)
        try:
            await self._client.xadd(self.stream, fields, maxlen=self.maxlen, approximate=True)
        except redis.RedisError as exc:
            self._broken = True
            await self._client.connection_pool.disconnect()  # the next attempt dials again
            raise ConnectionError(f"XADD to {self.name} failed: {scrub(exc, self.url)}") from None
        if self._broken:
            self._broken = False
            self.restarts += 1

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
