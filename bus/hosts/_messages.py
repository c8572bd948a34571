"""The settings a sink host is started with, and how a sink travels to it."""

from __future__ import annotations

import msgspec

from .._config import SinkConfig

__all__ = ["Hello", "SinkSpec"]


class Hello(msgspec.Struct, frozen=True):
    """The host's settings, the first frame it reads."""

    shutdown_timeout: float
    state_dir: str  # where the progress record lives
    sys_path: list[str]  # the trainer's import path: sinks are unpickled by reference
    parent: int  # the trainer's pid
    control_fd: int  # a pipe: a byte on it (or its end) means the trainer is closing
    resume: bool = False  # a previous host of this trainer died: skip what it settled
    closing: bool = False  # the trainer is closing already: the shutdown clock runs from the start


class SinkSpec(msgspec.Struct, frozen=True):
    """One sink to run: its name on the trainer's bus, the pickled sink and its settings."""

    name: str
    sink: bytes
    config: SinkConfig
    accepts: list[str] | None = None  # the names of the event kinds it takes (None: all)
