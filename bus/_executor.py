"""DaemonExecutor: a thread pool whose threads never hold up the interpreter's exit.

concurrent.futures' ThreadPoolExecutor joins its threads at exit (a hung call hangs the process)
and refuses new work once the interpreter has started shutting down, which is exactly when the
bus drains at exit. Each sink's event loop uses this executor as its default one instead, so
`run_in_executor(None, ...)` (what aiofiles does) keeps working during the exit drain and a call
hung on a dead disk is simply left behind.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

__all__ = ["DaemonExecutor"]

T = TypeVar("T")

_Work = tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class DaemonExecutor(ThreadPoolExecutor):
    """Up to `max_workers` daemon threads, started on demand and reused while idle.

    A ThreadPoolExecutor only by type (asyncio's `set_default_executor` demands one): none of
    its machinery, and so none of its exit-time joining, is used."""

    def __init__(self, max_workers: int = 4, name: str = "metricbus-io") -> None:
        self._max_workers = max_workers
        self._name = name
        self._work: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)
        self._started = 0
        self._lock = threading.Lock()
        self._shut = False

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            if self._shut:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._work.put((future, fn, args, kwargs))
            if not self._idle.acquire(blocking=False) and self._started < self._max_workers:
                self._started += 1
                threading.Thread(target=self._serve, name=f"{self._name}-{self._started}", daemon=True).start()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking work; idle threads end. Never waits: a hung call must not hold anyone up."""
        with self._lock:
            self._shut = True
            for _ in range(self._started):
                self._work.put(None)

    def _serve(self) -> None:
        while (item := self._work.get()) is not None:
            future, fn, args, kwargs = item
            del item
            if future.set_running_or_notify_cancel():
                try:
                    result = fn(*args, **kwargs)
                except BaseException as exc:  # handed to whoever awaits the future
                    future.set_exception(exc)
                else:
                    future.set_result(result)
            del future, fn, args, kwargs
            self._idle.release()
