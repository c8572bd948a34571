"""The Redis bridge's contract: what `sinks.RedisSink` writes and `producers.RedisSource` reads.

One stream entry per batch, with four fields:

    mb   ENTRY_VERSION, so an aggregator skips (and counts) entries it cannot read
    p    the producer's id ('host-pid-random')
    s    the batch's sequence number, 1, 2, 3, ... per producer id (de-duplication)
    d    the events: a `bus.wire` body, the format the sink host's channel and the spool carry,
         with Scalars and Metrics as rows of their scope (`wire.encode_rows`): a third of the
         bytes of whole events, and the aggregator decodes each origin once per entry

Both ends also share the URL and name checks, and the redaction that keeps a password out of
names, logs and errors. Nothing here imports redis.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple
from urllib.parse import urlsplit

from bus import Event, InvalidConfig, InvalidEvent, wire

__all__ = [
    "BODY",
    "ENTRY_VERSION",
    "PRODUCER",
    "SEQUENCE",
    "VERSION",
    "Entry",
    "check_name",
    "check_url",
    "entry_fields",
    "read_entry",
    "redact_url",
    "scrub",
]

ENTRY_VERSION = b"2"
"""The entry layout's version. 1 carried a msgpack list of events; 2 carries a `bus.wire` body."""

VERSION, PRODUCER, SEQUENCE, BODY = "mb", "p", "s", "d"
"""The field names of an entry."""

_SCHEMES = ("redis", "rediss", "unix")


class Entry(NamedTuple):
    """One entry as the aggregator reads it; `body` is decoded with `bus.wire.decode`."""

    producer_id: str
    seq: int
    body: bytes


def entry_fields(producer_id: str, seq: int, events: Sequence[Event]) -> dict[str, bytes | str | int]:
    """The fields of the entry that carries batch `seq` of `producer_id` (for XADD)."""
    return {VERSION: ENTRY_VERSION, PRODUCER: producer_id, SEQUENCE: seq, BODY: wire.encode_rows(events)}


def read_entry(fields: Mapping[bytes, bytes]) -> Entry:
    """An entry's producer id, sequence and body, as redis-py returns its fields. Raises
    `InvalidEvent` for an entry that is not a metricbus entry of this version (its body is only
    read by `wire.decode`)."""
    producer, seq, body = fields.get(PRODUCER.encode()), fields.get(SEQUENCE.encode()), fields.get(BODY.encode())
    if fields.get(VERSION.encode()) != ENTRY_VERSION or producer is None or seq is None or body is None:
        raise InvalidEvent("entry", sorted(fields)[:6], f"is not a metricbus entry of version {ENTRY_VERSION.decode()}")
    try:
        return Entry(producer.decode(), int(seq), body)
    except ValueError:  # UnicodeDecodeError is one
        raise InvalidEvent("entry", (producer, seq), "has an unreadable producer id or sequence") from None


def redact_url(url: str) -> str:
    """The URL without its password (or query, where redis-py also accepts one), for names, logs
    and errors: 'redis://:s3cret@host:6379/0' -> 'redis://:***@host:6379/0'."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        user = parts.username or ""
        host = netloc.rpartition("@")[2]
        netloc = f"{user}:***@{host}"
    return f"{parts.scheme}://{netloc}{parts.path}"


def check_url(url: object) -> str:
    """Refuse, with InvalidConfig, what redis-py could not connect to."""
    if not isinstance(url, str) or urlsplit(url).scheme not in _SCHEMES:
        shown = redact_url(url) if isinstance(url, str) else repr(url)
        raise InvalidConfig(f"a Redis URL must start with redis://, rediss:// or unix://, got {shown!r}")
    return url


def check_name(value: object, what: str) -> str:
    """A stream, group, consumer or producer name: a non-empty str, else InvalidConfig."""
    if not isinstance(value, str) or not value:
        raise InvalidConfig(f"{what} must be a non-empty str, got {value!r}")
    return value


def scrub(exc: BaseException, url: str) -> str:
    """An exception's message with the URL's password cut out (redis-py does not print it, but
    a message is no place to take that on trust)."""
    text = f"{type(exc).__name__}: {exc}"
    password = urlsplit(url).password
    return text.replace(password, "***") if password else text
