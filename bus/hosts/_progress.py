"""The progress record: how far each sink of a host has settled, written by the host after every
batch a sink writes. A host started after a crash skips what its predecessor settled; the training
process reads it to save exactly what a host it gave up on (or killed at close) never settled."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import msgspec

__all__ = ["Counts", "Progress", "read_progress"]


class Counts(msgspec.Struct):
    """A route's settled state, as recorded for a successor: every batch up to `done` settled,
    and `partial` of this route's events of batch done + 1; with the counters at that moment, and
    `mark`, where its sink's output ended with them (a file sink's `output_mark`): the successor
    cuts the file back to it, so what a killed host wrote and had not recorded is not there twice."""

    done: int = 0
    partial: int = 0
    delivered: int = 0
    dropped: dict[str, int] = {}
    reduced: int = 0
    mark: int | None = None  # None: the sink keeps no mark (or has not opened yet)


class Progress:
    """The progress record: one small length-prefixed msgpack blob, rewritten in place each tick
    (a single pwrite, which a kill cannot tear)."""

    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / "progress"
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        self._last = b""

    def read(self) -> dict[str, Counts]:
        return read_progress(self._fd)

    def write(self, counts: Mapping[str, Counts]) -> None:
        body = msgspec.msgpack.encode(counts)
        if body != self._last:
            os.pwrite(self._fd, len(body).to_bytes(4, "little") + body, 0)
            self._last = body


def read_progress(source: int | Path) -> dict[str, Counts]:
    """The last progress record a host wrote, from an open fd or its path ({} if none)."""
    if not isinstance(source, int):
        try:
            fd = os.open(source, os.O_RDONLY)
        except OSError:
            return {}
        try:
            return read_progress(fd)
        finally:
            os.close(fd)
    data = os.pread(source, 1 << 24, 0)
    if len(data) < 4:
        return {}
    size = int.from_bytes(data[:4], "little")
    try:
        return msgspec.msgpack.decode(data[4 : 4 + size], type=dict[str, Counts])
    except msgspec.DecodeError:
        return {}
