"""The framing between the bus and a sink's worker process: length-prefixed msgpack messages.

A request is [op, payload]; a reply is [ok, value]. Batches travel as msgpack-encoded events
(msgspec, so NaN and ±inf survive and decoding re-validates them); the sink itself travels once,
pickled, with the "open" request.
"""

from __future__ import annotations

import struct
from typing import Any

import msgspec

from ._events import Event

__all__ = ["HEADER", "decode_batch", "encode_batch", "frame", "pack", "unpack"]

HEADER = struct.Struct("<I")
_encoder = msgspec.msgpack.Encoder()
_batch_decoder = msgspec.msgpack.Decoder(list[Event])  # type: ignore[arg-type]


def encode_batch(events: Any) -> bytes:
    return _encoder.encode(events)


def decode_batch(data: bytes) -> list[Event]:
    return _batch_decoder.decode(data)


def pack(op: str, payload: Any = None) -> bytes:
    return frame(_encoder.encode([op, payload]))


def frame(body: bytes) -> bytes:
    return HEADER.pack(len(body)) + body


def unpack(body: bytes) -> Any:
    return msgspec.msgpack.decode(body)
