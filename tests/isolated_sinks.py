"""Sinks for the worker-process tests; importable by the worker (a test module's classes are not)."""

from __future__ import annotations

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
