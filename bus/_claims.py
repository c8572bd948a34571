"""Which open bus (or logger) holds each sink object, and the files it writes.

One sink object on two open buses would get every event twice, interleaved from two threads or
two host processes writing the same file: the second `add_sink` is refused. The files and folders
a sink writes are locked for this process at the same time (`_file_locks.py`): another process
given the same path is refused too. A bus releases its sinks, and their locks, when it closes.
"""

from __future__ import annotations

import contextlib
import os
import weakref

from . import _file_locks
from ._errors import SinkAlreadyAdded
from ._sink import Sink

__all__ = ["claim_sink", "release_sink"]

_owners: dict[int, tuple[weakref.ref[Sink] | None, weakref.ref[object]]] = {}
_locks: dict[int, list[int]] = {}  # id(sink) -> the fds holding its files' locks


def claim_sink(sink: Sink, owner: object, *, lock_files: bool = True) -> None:
    """Record that `owner` feeds `sink`; `SinkAlreadyAdded` if another open owner does.
    `lock_files=False`: its files are locked elsewhere (a job's host, which every rank feeds)."""
    held = _owners.get(id(sink))
    if held is not None:
        sink_ref, owner_ref = held
        same_sink = sink_ref is None or sink_ref() is sink  # an id reused by a new object is not a claim
        other = owner_ref()
        if same_sink and other is not None and other is not owner:
            raise SinkAlreadyAdded(
                f"this {type(sink).__name__} is already on another open bus (another MetricLogger?); "
                "a sink object can feed one bus at a time"
            )
    if lock_files and id(sink) not in _locks:
        _locks[id(sink)] = _lock_files(sink)
    try:
        sink_ref = weakref.ref(sink)
    except TypeError:  # a sink with __slots__ and no __weakref__
        sink_ref = None
    _owners[id(sink)] = (sink_ref, weakref.ref(owner))


def _lock_files(sink: Sink) -> list[int]:
    fds: list[int] = []
    try:
        for path in sink.exclusive_paths():
            fd = _file_locks.lock_path(path, sink.name)
            if fd is not None:
                fds.append(fd)
    except BaseException:
        _close(fds)
        raise
    return fds


def _close(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def release_sink(sink: Sink, owner: object) -> None:
    """`owner` no longer feeds `sink` (it closed)."""
    held = _owners.get(id(sink))
    if held is not None and held[1]() in (owner, None):
        del _owners[id(sink)]
        _close(_locks.pop(id(sink), []))


def _forget_after_fork() -> None:
    """A forked child (a DataLoader worker) must not keep its parent's files locked after the
    parent is gone: it closes its copies of the lock fds (the parent's stay locked)."""
    for fds in _locks.values():
        _close(fds)
    _locks.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)
