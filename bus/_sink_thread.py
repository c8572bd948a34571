"""SinkThread: where a sink's code runs, so that the bus can always walk away from it.

Blocking work in a thread cannot be cancelled: a sink stuck in a hung disk write, an SDK call,
`anyio.to_thread.run_sync` or an executor would hold whatever loop awaits it. So each sink runs on
its own daemon thread with its own asyncio loop (and a default executor of daemon threads), and
the bus awaits each call from its loop through a future it can stop waiting on at a deadline.
A hung sink then costs one parked thread, never the bus, the other sinks or the process's exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import Any, TypeVar

import anyio

from ._executor import DaemonExecutor

__all__ = ["SinkThread"]

T = TypeVar("T")


class SinkThread:
    """A daemon thread running one asyncio loop for one sink's calls, one at a time."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._loop = asyncio.new_event_loop()
        self._loop.set_default_executor(DaemonExecutor(name=f"metricbus-io {name}"))
        self._stopped: asyncio.Future[None] | None = None
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), name=f"metricbus sink {name}", daemon=True)
        self._thread.start()
        started.wait()

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run `fn(*args)` on the sink's loop and await its result from the caller's loop.

        Cancelling the caller (a deadline) stops the wait at once and asks the sink's task to
        cancel; a task that cannot be cancelled (it blocks its loop) is simply left behind."""
        future: Future[T] = asyncio.run_coroutine_threadsafe(_run_call(fn, args), self._loop)
        return await _await_future(future)

    def stop(self) -> None:
        """Let the thread end once its loop is free; never waits for it."""
        with contextlib.suppress(RuntimeError):  # the loop already closed
            self._loop.call_soon_threadsafe(self._stop_soon)

    def _stop_soon(self) -> None:
        if self._stopped is not None and not self._stopped.done():
            self._stopped.set_result(None)

    def _run(self, started: threading.Event) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        try:
            # A root task run with run_until_complete is what anyio's to_thread expects to find.
            loop.run_until_complete(self._main(started))
            leftovers = asyncio.all_tasks(loop)
            for task in leftovers:
                task.cancel()
            if leftovers:
                loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()

    async def _main(self, started: threading.Event) -> None:
        self._stopped = asyncio.get_running_loop().create_future()
        started.set()
        await self._stopped


async def _run_call(fn: Callable[..., Awaitable[T]], args: tuple[Any, ...]) -> T:
    return await fn(*args)


async def _await_future(future: Future[T]) -> T:
    """Await a concurrent future from any anyio backend without ever blocking the caller's loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # not asyncio (trio): wake through anyio's token
        return await _await_future_anyio(future)
    return await asyncio.wrap_future(future)


async def _await_future_anyio(future: Future[T]) -> T:
    done = anyio.Event()
    token = anyio.lowlevel.current_token()

    def wake(_: Future[T]) -> None:
        with contextlib.suppress(anyio.RunFinishedError):
            anyio.from_thread.run_sync(done.set, token=token)

    future.add_done_callback(wake)
    try:
        await done.wait()
    except anyio.get_cancelled_exc_class():
        future.cancel()
        raise
    return future.result()
