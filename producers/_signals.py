"""Signals, and the few lines of the logger that a signal must not cut in two.

SIGTERM is turned into `SystemExit`, so that `with` blocks and the exit hook drain the logger
(the default action would kill the process with its last batch unsent). Ctrl-C keeps raising
`KeyboardInterrupt`, wherever the user's loop is.

But a Python signal handler runs between any two bytecodes of the main thread, and an exception
raised between "take the batch out of the deque" and "hand it to the hosts" would lose that
batch. So while the main thread ships (`critical()`), the handlers installed here only note the
signal, and the exception is raised as soon as the batch is handed over. Only the handlers
installed here defer: a handler the program installed itself is left alone.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

__all__ = ["critical", "install", "uninstall"]

_depth = 0  # how deep the main thread is in critical sections
_deferred: BaseException | None = None
_installed: dict[signal.Signals, Any] = {}  # signal -> the handler we replaced
_users = 0  # loggers that asked for the handlers


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    _raise(SystemExit(128 + signum))


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    _raise(KeyboardInterrupt())


def _raise(exc: BaseException) -> None:
    global _deferred
    if _depth:
        if _deferred is None:
            _deferred = exc
        return
    raise exc


@contextlib.contextmanager
def critical() -> Iterator[None]:
    """While the main thread is inside, our signal handlers defer their exception to its end."""
    global _depth, _deferred
    if threading.current_thread() is not threading.main_thread():
        yield  # handlers only ever raise in the main thread
        return
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if not _depth and _deferred is not None:
            exc, _deferred = _deferred, None
            raise exc


def install(*, sigterm: bool) -> None:
    """Take SIGTERM (if `sigterm` and nobody else handles it) and Ctrl-C (if it has Python's
    default handler); from the main thread only, as `signal.signal` requires."""
    global _users
    if threading.current_thread() is not threading.main_thread():
        return
    _users += 1
    if sigterm and signal.SIGTERM not in _installed and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        _installed[signal.SIGTERM] = signal.signal(signal.SIGTERM, _on_sigterm)
    if signal.SIGINT not in _installed and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        _installed[signal.SIGINT] = signal.signal(signal.SIGINT, _on_sigint)


def uninstall() -> None:
    """The last logger closed: give the signals back, unless the program took them meanwhile."""
    global _users
    if threading.current_thread() is not threading.main_thread() or not _users:
        return
    _users -= 1
    if _users:
        return
    ours = {signal.SIGTERM: _on_sigterm, signal.SIGINT: _on_sigint}
    for signum, previous in list(_installed.items()):
        if signal.getsignal(signum) is ours[signum]:
            signal.signal(signum, previous)
        del _installed[signum]
