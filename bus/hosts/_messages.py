"""The settings a sink host is started with, and how a sink travels to it."""

from __future__ import annotations

import msgspec

from .._config import SinkConfig
from .._rank_reduce import RankReduce

__all__ = ["Hello", "JobHello", "RankHello", "SinkSpec"]


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


class JobHello(msgspec.Struct, frozen=True):
    """A job host's settings, from the rank that starts it (on its stdin)."""

    name: str  # the job, for messages
    run_dir: str  # where its socket and lock live
    shutdown_timeout: float  # the drain's budget once the last rank left
    sys_path: list[str]
    local_world_size: int  # ranks on this machine: the host drains once it saw them all leave
    ranks: RankReduce | None = None  # the cross-rank reduction, None: none here
    linger: float = 5.0  # with fewer ranks seen, how long it waits for more once all left


class RankHello(msgspec.Struct, frozen=True):
    """The first frame of a rank's connection to its job host."""

    rank: int
    pid: int
    site: str = ""  # the job's site in the ranks' origins (the reducer's job)
    link: str = ""  # this logger's link, the same on every reconnect: its batch numbers are its own
