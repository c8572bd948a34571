"""Sinks for the worker-process tests; importable by the worker (a test module's classes are not)."""

from __future__ import annotations

import errno
import json
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio

from bus import Event, Sink
from sinks import CsvSink, JsonlSink


class FailingSink(Sink):
    """Always raises inside the worker."""

    async def write_batch(self, events: Sequence[Event]) -> None:
        raise RuntimeError(f"failed in pid {os.getpid()}")


class HangingSink(Sink):
    """Records its pid in a file, then never returns from write_batch."""

    def __init__(self, pid_file: Path) -> None:
        self.pid_file = pid_file

    async def write_batch(self, events: Sequence[Event]) -> None:
        self.pid_file.write_text(str(os.getpid()))
        await anyio.sleep_forever()


def append_call(path: Path, *call: object) -> None:
    """A picklable OpenFL-style callback: one JSON array per call, a line each, in `path`."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(call) + "\n")  # json writes NaN as NaN and reads it back


def refuse_call(*call: object) -> None:
    """A callback whose destination is down."""
    raise ConnectionError("metrics server unreachable")


class OutageJsonlSink(JsonlSink):
    """A JSONL file whose disk is full (ENOSPC) until the wall clock passes `until`."""

    def __init__(self, path: Path, until: float) -> None:
        super().__init__(path)
        self.until = until

    async def write_batch(self, events: Sequence[Event]) -> None:
        if time.time() < self.until:
            raise OSError(errno.ENOSPC, "No space left on device")
        await super().write_batch(events)

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "until": self.until}


class UnreachableSink(Sink):
    """A remote service that never answers: every write is refused. Its output folder (where a
    real one would keep its files) is `home`."""

    def __init__(self, home: Path) -> None:
        self.home = home

    @property
    def output_dir(self) -> Path:
        return self.home

    async def write_batch(self, events: Sequence[Event]) -> None:
        raise ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")


class _DiesAfterWrite:
    """Kills the process it runs in (its sink host) right after the sink's write of batch
    `die_at` returned, before the host can record that batch as written. Once: `marker` says it
    happened. Mixed in before a file sink."""

    def __init__(self, path: Path, die_at: int, marker: Path) -> None:
        super().__init__(path)  # type: ignore[call-arg]
        self.die_at, self.marker, self.written = die_at, marker, 0

    async def write_batch(self, events: Sequence[Event]) -> None:
        await super().write_batch(events)  # type: ignore[misc]
        self.written += 1
        if self.written == self.die_at and not self.marker.exists():
            self.marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "die_at": self.die_at, "marker": self.marker, "written": 0}  # type: ignore[misc]


class DyingJsonlSink(_DiesAfterWrite, JsonlSink):
    """A JSONL file whose host is killed right after the write of batch `die_at`."""


class DyingCsvSink(_DiesAfterWrite, CsvSink):
    """A long CSV file whose host is killed right after the write of batch `die_at`."""
