"""JsonlSink: one JSON object per line, encoded by msgspec; `read_jsonl` gives the events back.

Plain JSON has no NaN or infinity, and msgspec would write them as `null`. We write them as the
strings "NaN", "Infinity" and "-Infinity" (the spellings of JavaScript and of Python's json
module) and decode in msgspec's lax mode, which turns those strings back into floats, so a
round trip gives equal events, NaN and ±inf included. An Image's raw pixels are bytes, which
msgspec writes as base64 and reads back as the same bytes (4/3 of the pixels' size per line).

A file left with a torn last line (the writer was killed mid-write) is cut back to its last whole
line before appending, with a warning; a write that fails midway is undone before the retry
(both by `RecordFile`, shared with CsvSink).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import msgspec

from bus import Event, InvalidConfig, Sink

from ._record_file import RecordFile

__all__ = ["JsonlSink", "iter_jsonl", "read_jsonl"]

log = logging.getLogger("metricbus")

_encoder = msgspec.json.Encoder()
_decoder: msgspec.json.Decoder[Event] = msgspec.json.Decoder(Event, strict=False)  # type: ignore[arg-type]
_CHUNK = 1 << 16  # bytes read at a time when scanning a file for its last whole record


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
    # NaN/inf are the only source of null (None defaults are omitted); a text or an image's base64
    # that spells "null" only takes the slower path, which is as exact.
    if b"null" not in data:
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


def _lines_end(path: Path) -> int:
    """Where the last whole line of `path` ends (0 if there is none, or no file). msgspec escapes
    newlines inside strings, so every newline ends a record: only the torn tail is read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        return 0
    with open(path, "rb") as f:
        pos = f.seek(0, os.SEEK_END)
        while pos > 0:
            start = max(0, pos - _CHUNK)
            f.seek(start)
            newline = f.read(pos - start).rfind(b"\n")
            if newline >= 0:
                return start + newline + 1
            pos = start
    return 0


class JsonlSink(Sink):
    """Appends every event to `path` as one JSON line. Every event type is written.

    Its default name is "jsonl:" and the path as given, so sinks on different files never clash.
    """

    # aiofiles does its I/O (see CsvSink): served on the bus's or the sink host's own loop.
    blocking = False

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise InvalidConfig(f"JsonlSink({str(path)!r}): that is a folder; give the path of a file in it")
        self._file = RecordFile(self.path)

    @property
    def output_dir(self) -> Path | None:
        return self.path.parent

    def exclusive_paths(self) -> tuple[Path, ...]:
        return (self.path,)

    @property
    def name(self) -> str:
        return f"jsonl:{self.path.as_posix()}"

    def output_mark(self) -> int | None:
        """Where the file ends after the last batch written (None while not open). A sink host
        (private or a job's) records it with what it settled; after a crash its successor passes
        it to `resume_output`."""
        return self._file.end

    def resume_output(self, mark: int) -> None:
        """Before `open`: cut the file back to `mark`, what a sink host that crashed had
        recorded; what it wrote after that is sent again, and must not be there twice."""
        self._file.resume = mark

    async def open(self) -> None:
        await self._file.open(await anyio.to_thread.run_sync(_lines_end, self.path))  # reads the file: off the loop

    async def write_batch(self, events: Sequence[Event]) -> None:
        await self._file.append(encode_lines(events))  # unbuffered: in the OS once this returns

    async def close(self) -> None:
        await self._file.close()

    def __getstate__(self) -> dict[str, Any]:
        """The state of an unopened copy, for a worker process: an open file does not pickle."""
        return JsonlSink(self.path).__dict__
