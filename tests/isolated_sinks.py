"""Sinks for the worker-process tests; importable by the worker (a test module's classes are not)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import anyio

from bus import Event, Sink


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
