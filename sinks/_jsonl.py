"""JsonlSink: one JSON object per line, encoded by msgspec; `read_jsonl` gives the events back.

Plain JSON has no NaN or infinity, and msgspec would write them as `null`. We write them as the
strings "NaN", "Infinity" and "-Infinity" (the spellings of JavaScript and of Python's json
module) and decode in msgspec's lax mode, which turns those strings back into floats, so a
round trip gives equal events, NaN and ±inf included.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import aiofiles
import msgspec
from aiofiles.threadpool.binary import AsyncBufferedIOBase

from bus import Event, Sink

__all__ = ["JsonlSink", "iter_jsonl", "read_jsonl"]

_encoder = msgspec.json.Encoder()
_decoder: msgspec.json.Decoder[Event] = msgspec.json.Decoder(Event, strict=False)  # type: ignore[arg-type]


def _nonfinite(value: float) -> float | str:
    if value - value == 0.0:  # false only for NaN and ±inf
        return value
    if value != value:
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def _json_safe(value: Any) -> Any:
    """A builtins copy (from msgspec.to_builtins) with every non-finite float as a string."""
    if type(value) is float:
        return _nonfinite(value)
    if type(value) is dict:
        return {k: _json_safe(v) for k, v in value.items()}
    if type(value) in (list, tuple):
        return [_json_safe(v) for v in value]
    return value


def encode_lines(events: Sequence[Event]) -> bytes:
    """Newline-delimited JSON for a batch. The common all-finite batch is one msgspec call."""
    data = _encoder.encode_lines(events)
    if b"null" not in data:  # NaN/inf are the only source of null: None defaults are omitted
        return data
    return _encoder.encode_lines([_json_safe(msgspec.to_builtins(event)) for event in events])


def iter_jsonl(path: str | Path) -> Iterator[Event]:
    """Events from a JSONL file written by JsonlSink. A torn last line (the process was killed
    mid-write) is skipped; any other bad line raises msgspec.DecodeError."""
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    last = len(lines) - 1
    for i, line in enumerate(lines):
        if not line:
            continue
        try:
            yield _decoder.decode(line)
        except msgspec.DecodeError:
            if i == last:  # no newline after it: the write was cut short
                return
            raise


def read_jsonl(path: str | Path) -> list[Event]:
    """All events of a JSONL file written by JsonlSink, in order."""
    return list(iter_jsonl(path))


class JsonlSink(Sink):
    """Appends every event to `path` as one JSON line. Every event type is written."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file: AsyncBufferedIOBase | None = None

    @property
    def name(self) -> str:
        return f"jsonl:{self.path.name}"

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = await aiofiles.open(self.path, "ab")

    async def write_batch(self, events: Sequence[Event]) -> None:
        assert self._file is not None
        await self._file.write(encode_lines(events))
        await self._file.flush()  # to the OS each batch: a kill -9 loses at most one interval

    async def flush(self) -> None:
        if self._file is not None:
            await self._file.flush()

    async def close(self) -> None:
        if self._file is not None:
            await self._file.close()
            self._file = None

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "_file": None}
