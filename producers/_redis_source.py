"""RedisSource: the aggregating side of the Redis bridge. It reads the entries `sinks.RedisSink`
writes, with a consumer group, and publishes their events onto the local bus.

Delivery is at least once, made effectively once by de-duplication:

1. Read a batch of entries (XREADGROUP; at start, first every entry still pending in the group,
   taken over with XAUTOCLAIM from a consumer that died, this one's earlier self included).
2. Skip each entry whose (producer id, sequence) was applied already: `<stream>:applied` is a
   Redis hash of the last sequence applied per producer id.
3. Publish the rest onto the bus.
4. Once `bus.flush()` says every sink has written them, in one MULTI/EXEC: XACK the entries and
   raise their producers' sequences in the hash.

Reading and writing overlap: while the sinks write and flush what was read, the next entries are
read and published; the acknowledgement follows the flush that covered them, in read order. At
most `inflight` reads are published and not yet flushed (the bus's own backpressure bounds the
rest).

With `ranks=RankReduce(...)` the ranks of each job are reduced into the job's own series on the
way (`bus.RankReducer`): a read is acknowledged only once every step it fed has closed and its
row is written, so a crash loses no reduced row either; the steps still open are written, over
the ranks present, at a graceful stop.

Killed between 3 and 4, the entries stay pending and the next aggregator writes them again: at
most the batches written but not acknowledged come twice, and `stats().recovered_events` says how
many events were at risk. A graceful stop (`stop()`, SIGTERM to `metricbus aggregate`, or the bus
closing) finishes the batches in hand first, so nothing comes twice. An entry that is not ours
(missing fields, a truncated payload, an unknown event kind) is logged, counted and acknowledged.

One aggregator per group reads at a time: sequences are applied in stream order, and a second
consumer in the same group would take some of a producer's entries out of that order.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import msgspec

from bus import (
    BusClosed,
    Event,
    InvalidConfig,
    InvalidEvent,
    MetricBus,
    Origin,
    RankReduce,
    RankReducer,
    RankStats,
    SinkState,
    wire,
)
from sinks.redis_bridge import check_name, check_url, read_entry, redact_url, scrub

__all__ = ["ProducerProgress", "RedisSource", "SourceStats", "origin_from_env"]

log = logging.getLogger("metricbus")

_MAX_BACKOFF = 2.0
_LAG_PROBE = 100  # on Redis < 7 (no lag in XINFO GROUPS) lag is counted up to this many entries


def origin_from_env(*, site: str = "") -> Origin:
    """This process's origin from the variables torchrun sets: rank from RANK, node from
    GROUP_RANK ('node0', 'node1', ...); `site` names a federated site. Unset parts stay empty."""
    rank = os.environ.get("RANK")
    group_rank = os.environ.get("GROUP_RANK")
    return Origin(
        site=site,
        node=f"node{int(group_rank)}" if group_rank is not None else "",
        rank=int(rank) if rank is not None else None,
    )


class ProducerProgress(msgspec.Struct, frozen=True):
    """One producer id's progress at the aggregator (since this source started)."""

    last_seq: int  # the last batch sequence applied (also before this run, from Redis)
    entries: int  # entries (batches) applied
    events: int  # events published onto the bus
    duplicates: int  # entries skipped: their sequence was applied already
    bad: int  # entries that could not be read (counted, logged, acknowledged)
    gaps: int  # sequences never seen: trimmed (MAXLEN) before the aggregator read them
    idle: float  # seconds since an entry of this producer last arrived


class SourceStats(msgspec.Struct, frozen=True):
    """What a RedisSource did. `recovered_*`: pending entries taken over at start, which a killed
    aggregator may have written already (the only duplicates at-least-once can leave)."""

    stream: str
    group: str
    consumer: str
    producers: dict[str, ProducerProgress]
    entries: int
    events: int
    duplicates: int
    bad_entries: int  # all bad entries, also those without a producer id
    recovered_entries: int
    recovered_events: int
    lag: int | None  # stream entries not yet delivered to the group (None: not known yet)
    pending: int | None  # entries delivered but not yet acknowledged
    reconnects: int
    last_error: str | None
    ranks: RankStats | None = None  # the cross-rank reduction's account, when it reduces


@dataclass
class _Progress:
    last_seq: int = 0
    entries: int = 0
    events: int = 0
    duplicates: int = 0
    bad: int = 0
    gaps: int = 0
    seen: float = field(default_factory=time.monotonic)


@dataclass
class _Read:
    """One read batch, decoded: what to publish and what to acknowledge with it."""

    ids: list[bytes] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    applied: dict[str, int] = field(default_factory=dict)
    token: int = 0  # its place in read order (what the rank reducer holds it by)


class RedisSource:
    """Read `stream` at `url` as consumer `consumer` (default `aggregator-<host>`) of `group`
    and publish its events onto the bus: `bus.add_producer(RedisSource(url))`, or
    `log.add_producer(...)` on a MetricLogger. `count`: entries per read; `block`: seconds a read
    waits for new entries (also how soon `stop()` is noticed); `inflight`: reads published and
    not yet flushed, at most; `ranks`: reduce the ranks of each job (`bus.RankReduce`)."""

    def __init__(
        self,
        url: str,
        *,
        stream: str = "metricbus",
        group: str = "metricbus",
        consumer: str | None = None,
        count: int = 50,
        block: float = 0.2,
        socket_timeout: float = 10.0,
        inflight: int = 8,
        ranks: RankReduce | Mapping[str, Any] | None = None,
    ) -> None:
        self.url = check_url(url)
        self.stream = check_name(stream, "stream")
        self.group = check_name(group, "group")
        self.consumer = (
            check_name(consumer, "consumer") if consumer is not None else f"aggregator-{socket.gethostname()}"
        )
        if not isinstance(count, int) or count < 1:
            raise InvalidConfig(f"count must be an int >= 1, got {count!r}")
        if not 0 < block < socket_timeout:
            raise InvalidConfig(f"need 0 < block < socket_timeout, got {block!r}, {socket_timeout!r}")
        if not isinstance(inflight, int) or inflight < 1:
            raise InvalidConfig(f"inflight must be an int >= 1, got {inflight!r}")
        if isinstance(ranks, Mapping):  # a plan's settings = { ranks = { world_size = 4 } }
            try:
                ranks = RankReduce(**ranks)
            except TypeError as exc:
                raise InvalidConfig(f"ranks: {exc}") from None
        if ranks is not None and not isinstance(ranks, RankReduce):
            raise InvalidConfig(f"ranks must be a bus.RankReduce, got {type(ranks).__name__}")
        self.count = count
        self.block = block
        self.inflight = inflight
        self.reducer = RankReducer(ranks) if ranks is not None else None
        self.socket_timeout = socket_timeout
        self.applied_key = f"{stream}:applied"
        self._applied: dict[str, int] = {}  # last sequence applied per producer id
        self._progress: dict[str, _Progress] = {}
        self._published: deque[_Read] = deque()  # published, not yet acknowledged, in read order
        self._tokens = 0  # the token of the last read published
        self._flushed = 0  # the token of the last read the sinks have flushed
        # made on the loop, in __call__: a reduction and its publishing, apart from the acker's
        # snapshot; one acknowledgement at a time, in read order; the acker has something new to
        # flush; a flush finished (the reader may go on)
        self._lock: anyio.Lock
        self._ack_lock: anyio.Lock
        self._wake: anyio.Event
        self._progress_made: anyio.Event
        self._claiming = True  # pending entries to take over before reading new ones
        self._ready = False  # group made and applied sequences loaded on this connection
        self._stopping = False
        self._running = False
        self._bad = self._entries = self._events = self._duplicates = 0
        self._recovered_entries = self._recovered_events = 0
        self._lag: int | None = None
        self._pending: int | None = None
        self._lag_at = 0.0
        self._reconnects = 0
        self._last_error: str | None = None

    @property
    def name(self) -> str:
        return f"redis:{redact_url(self.url)}/{self.stream}"

    def stop(self) -> None:
        """Finish the batch in hand (written, flushed, acknowledged) and return. Callable from
        any thread; noticed within `block` seconds."""
        self._stopping = True

    @property
    def running(self) -> bool:
        """True from the first read until the source has returned."""
        return self._running

    def stats(self) -> SourceStats:
        now = time.monotonic()
        producers = {
            pid: ProducerProgress(p.last_seq, p.entries, p.events, p.duplicates, p.bad, p.gaps, round(now - p.seen, 3))
            for pid, p in list(self._progress.items())
        }
        return SourceStats(
            stream=self.stream,
            group=self.group,
            consumer=self.consumer,
            producers=producers,
            entries=self._entries,
            events=self._events,
            duplicates=self._duplicates,
            bad_entries=self._bad,
            recovered_entries=self._recovered_entries,
            recovered_events=self._recovered_events,
            lag=self._lag,
            pending=self._pending,
            reconnects=self._reconnects,
            last_error=self._last_error,
            ranks=None if self.reducer is None else self.reducer.stats(),
        )

    # ---- the loop ----

    async def __call__(self, bus: MetricBus) -> None:
        import redis.asyncio

        client = redis.asyncio.from_url(
            self.url, socket_timeout=self.socket_timeout, socket_connect_timeout=self.socket_timeout
        )
        self._running = True
        self._lock, self._ack_lock = anyio.Lock(), anyio.Lock()
        self._wake, self._progress_made = anyio.Event(), anyio.Event()
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(self._acker, bus, client)
                try:
                    await self._reader(bus, client)
                finally:
                    with anyio.CancelScope(shield=True):
                        await self._finish(bus, client)
                    tasks.cancel_scope.cancel()
        finally:
            self._running = False
            with anyio.CancelScope(shield=True):
                await client.aclose()

    async def _reader(self, bus: MetricBus, client: Any) -> None:
        import redis

        failures = 0
        while not self._stopping:
            try:
                if not self._ready:
                    await self._setup(client)
                await self._step(bus, client)
                failures = 0
            except redis.RedisError as exc:
                failures += 1
                self._reconnects += 1
                self._ready = False
                self._last_error = scrub(exc, self.url)
                delay = min(_MAX_BACKOFF, 0.05 * 2 ** (failures - 1))
                log.warning("%s: %s; reconnecting in %.2fs", self.name, self._last_error, delay)
                await client.connection_pool.disconnect()
                await anyio.sleep(delay)

    async def _finish(self, bus: MetricBus, client: Any) -> None:
        """No more reads (a stop, the bus closing, an error): write the steps the reducer still
        holds, flush, and acknowledge every read published. If Redis refuses the XACK now, the
        reads stay pending and the next aggregator takes them over (and skips them: applied)."""
        import redis

        held = self.reducer.held_token() if self.reducer is not None else None
        if self.reducer is not None:
            rows = self.reducer.drain()
            if not rows or await self._publish(bus, rows):
                held = None
        async with self._ack_lock:
            if held is not None:  # the bus closed first: the reads that fed open steps stay pending
                while self._published and self._published[-1].token >= held:
                    self._published.pop()
            if self._published and await self._flush(bus):
                try:
                    await self._ack(client, list(self._published))
                except redis.RedisError as exc:
                    self._last_error = scrub(exc, self.url)
                    log.warning("%s: %s; %d reads left pending", self.name, self._last_error, len(self._published))

    async def _setup(self, client: Any) -> None:
        """Make the group (reading from the stream's start), load the applied sequences, and send
        an acknowledgement that failed before."""
        import redis

        try:
            await client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        stored = await client.hgetall(self.applied_key)
        for pid, seq in stored.items():
            key = pid.decode()
            self._applied[key] = max(self._applied.get(key, 0), int(seq))
        self._claiming = True  # after a reconnect too: what this consumer had read is pending again
        self._ready = True

    async def _step(self, bus: MetricBus, client: Any) -> None:
        if self._claiming:
            entries = await self._claim(client)
            recovered = True
        else:
            reply = await client.xreadgroup(
                self.group, self.consumer, {self.stream: ">"}, count=self.count, block=int(self.block * 1000)
            )
            entries = reply[0][1] if reply else []
            recovered = False
        if entries:
            await self._apply(bus, self._decode(entries, recovered))
        if self.reducer is not None:
            async with self._lock:
                rows = self.reducer.expired()
                if rows:
                    await self._publish(bus, rows)
                    self._wake.set()  # the reads those steps held may be acknowledged once written
        now = time.monotonic()
        if now - self._lag_at >= 1.0 or not entries:
            self._lag_at = now
            await self._measure_lag(client)

    async def _claim(self, client: Any) -> list[Any]:
        """The next pending entries of the group, whoever read them; none left ends the claim."""
        start = b"0-0"
        while True:
            reply = await client.xautoclaim(self.stream, self.group, self.consumer, 0, start_id=start, count=self.count)
            start, entries = reply[0], reply[1]
            if entries or start in (b"0-0", "0-0"):
                break
        if start in (b"0-0", "0-0"):
            self._claiming = False
        return list(entries)

    def _decode(self, entries: list[Any], recovered: bool) -> _Read:
        read = _Read()
        for entry_id, fields in entries:
            if entry_id is None:  # XAUTOCLAIM on Redis 6.2: a pending entry since trimmed away
                continue
            read.ids.append(entry_id)
            events = self._entry(entry_id, fields, read)
            if events:
                read.events += events
                if recovered:
                    self._recovered_entries += 1
                    self._recovered_events += len(events)
        return read

    def _entry(self, entry_id: bytes, fields: Mapping[bytes, bytes] | None, read: _Read) -> list[Event]:
        """The events of one entry, or [] (a duplicate or a bad entry, counted)."""
        if not fields:
            return self._bad_entry(entry_id, None, "trimmed from the stream while pending")
        try:
            pid, seq, body = read_entry(fields)
        except InvalidEvent as exc:
            return self._bad_entry(entry_id, None, str(exc))
        progress = self._progress.get(pid)
        if progress is None:
            progress = self._progress[pid] = _Progress(last_seq=self._applied.get(pid, 0))
        progress.seen = time.monotonic()
        last = self._applied.get(pid, 0)
        if seq <= last:
            progress.duplicates += 1
            self._duplicates += 1
            return []
        if last and seq > last + 1:
            progress.gaps += seq - last - 1
        self._applied[pid] = read.applied[pid] = progress.last_seq = seq
        try:
            events = wire.decode(body)
        except InvalidEvent as exc:
            progress.bad += 1
            return self._bad_entry(entry_id, pid, f"payload of batch {seq}: {exc}")
        progress.entries += 1
        progress.events += len(events)
        self._entries += 1
        self._events += len(events)
        return events

    def _bad_entry(self, entry_id: bytes, pid: str | None, reason: str) -> list[Event]:
        self._bad += 1
        log.warning("%s: skipped entry %s%s: %s", self.name, entry_id.decode(), f" of {pid}" if pid else "", reason)
        return []

    async def _apply(self, bus: MetricBus, read: _Read) -> None:
        """Reduce and publish a read and hand it to the acker, once fewer than `inflight` reads
        wait for a flush. Shielded: a stop or the bus closing lets it finish."""
        while self._tokens - self._flushed >= self.inflight:
            self._progress_made = anyio.Event()
            await self._progress_made.wait()
        with anyio.CancelScope(shield=True):
            async with self._lock:
                self._tokens += 1
                read.token = self._tokens
                events = read.events
                if self.reducer is not None:
                    events = self.reducer.add_many(events, read.token)
                if events:
                    await self._publish(bus, events)
                self._published.append(read)
            self._wake.set()

    async def _publish(self, bus: MetricBus, events: list[Event]) -> bool:
        """Publish; False if the bus had closed (during a stop: the caller leaves what those
        events stand for unacknowledged)."""
        try:
            await bus.publish_many(events)
        except BusClosed:
            if not self._stopping:
                raise
            return False
        return True

    async def _acker(self, bus: MetricBus, client: Any) -> None:
        """Flush what was published and acknowledge, in read order, the reads that flush
        covered and no open step of the reducer holds. A failed XACK is tried again at the next
        round (after a pause); the reader's own reconnection mends the connection."""
        import redis

        failures = 0
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            async with self._lock:  # a consistent snapshot: what is published, what is held
                top = self._tokens
                held = self.reducer.held_token() if self.reducer is not None else None
            async with self._ack_lock:
                if not self._published:
                    continue
                with anyio.CancelScope(shield=True):
                    if not await self._flush(bus):
                        return
                    self._flushed = top
                    self._progress_made.set()
                    ready = []
                    for read in self._published:
                        if read.token > top or (held is not None and read.token >= held):
                            break
                        ready.append(read)
                    try:
                        if ready:
                            await self._ack(client, ready)
                        failures = 0
                    except redis.RedisError as exc:
                        failures += 1
                        self._last_error = scrub(exc, self.url)
                        await anyio.sleep(min(_MAX_BACKOFF, 0.05 * 2 ** (failures - 1)))
                        self._wake.set()

    async def _flush(self, bus: MetricBus) -> bool:
        """Wait for the sinks to write everything published; False if they never will."""
        try:
            await bus.flush()
        except BusClosed:  # the bus began closing after the publish: its drain writes them
            return await _drained(bus)
        return True

    async def _ack(self, client: Any, reads: list[_Read]) -> None:
        applied: dict[str, int] = {}
        for read in reads:
            applied.update(read.applied)
        ids = [entry_id for read in reads for entry_id in read.ids]
        async with client.pipeline(transaction=True) as pipe:
            if ids:
                pipe.xack(self.stream, self.group, *ids)
            if applied:
                pipe.hset(self.applied_key, mapping=applied)
            await pipe.execute()
        for _ in reads:
            self._published.popleft()

    async def _measure_lag(self, client: Any) -> None:
        for group in await client.xinfo_groups(self.stream):
            name = group["name"]
            if (name.decode() if isinstance(name, bytes) else name) != self.group:
                continue
            self._pending = int(group["pending"])
            lag = group.get("lag")
            if lag is None:  # Redis < 7: count what follows the last delivered id, up to a bound
                after = b"(" + group["last-delivered-id"]
                lag = len(await client.xrange(self.stream, min=after, max="+", count=_LAG_PROBE))
            self._lag = int(lag)


async def _drained(bus: MetricBus, poll: float = 0.01) -> bool:
    """Wait (within the bus's shutdown timeout) until every sink is closed; True if none failed,
    so what was published before the close is written and may be acknowledged."""
    with anyio.move_on_after(bus.shutdown_timeout):
        while any(s.state in (SinkState.PENDING, SinkState.OPEN, SinkState.DOWN) for s in bus.stats().values()):  # noqa: ASYNC110 - the bus has no event for "every sink closed"
            await anyio.sleep(poll)
    return all(s.state is SinkState.CLOSED for s in bus.stats().values())
