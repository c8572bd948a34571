"""ProcessSink: run any sink in a worker process, so its Python work does not take the GIL from
the training loop.

The bus keeps batching, retries and counting on its side; this sink only ships each batch
(msgspec msgpack, ~0.1 us per event to encode) to `python -m bus._worker` and waits for the
reply without blocking the event loop. If the worker dies, the write raises, the bus retries,
and the retry starts a fresh worker (delivery is at least once: a batch the dead worker had
already written may be written again).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import pickle
import subprocess
import sys
import weakref
from collections.abc import Sequence
from typing import Any

import anyio
from anyio.abc import Process

from ._errors import InvalidConfig, WorkerDied, WorkerError
from ._events import Event
from ._sink import Sink
from ._wire import HEADER, encode_batch, pack, unpack

__all__ = ["ProcessSink"]

log = logging.getLogger("metricbus")

_live: weakref.WeakKeyDictionary[ProcessSink, int] = weakref.WeakKeyDictionary()  # sink -> parent pid


class ProcessSink(Sink):
    """Wraps `inner` (which must be picklable before `open`) to run in its own process."""

    # Only pipe I/O here, all awaited and cancellable: the bus's loop serves it directly, and the
    # worker process is what the bus walks away from (killed) when it hangs.
    blocking = False

    def __init__(self, inner: Sink, *, close_timeout: float = 30.0) -> None:
        if not isinstance(inner, Sink):
            raise InvalidConfig(f"ProcessSink needs a Sink, got {type(inner).__name__}")
        try:
            self._pickled = pickle.dumps(inner)
        except Exception as exc:
            raise InvalidConfig(f"{type(inner).__name__} cannot run in a worker process: {exc}") from exc
        self.inner = inner
        self.accepts = inner.accepts  # type: ignore[misc]
        self.close_timeout = close_timeout
        self.restarts = 0
        self._proc: Process | None = None
        self._buffer = b""

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    async def open(self) -> None:
        await self._start()

    async def write_batch(self, events: Sequence[Event]) -> int | None:
        if self._proc is None or self._proc.returncode is not None:
            # A worker that died while idle is noticed here; every new worker after the first
            # is a restart, shown in the sink's stats.
            if self._proc is not None:
                log.warning("worker of %r died while idle (exit code %s); restarting", self.name, self._proc.returncode)
            self.restarts += 1
            await self._start()
        result = await self._request("write", encode_batch(events))
        return result if isinstance(result, int) else None

    async def flush(self) -> None:
        if self._proc is not None:
            await self._request("flush")

    async def close(self) -> None:
        proc = self._proc
        if proc is None:
            return
        try:
            with anyio.fail_after(self.close_timeout):
                await self._request("close")
                await proc.wait()
        finally:
            self._proc = None
            _live.pop(self, None)
            await _end(proc)

    async def _start(self) -> None:
        if self._proc is not None:
            await _end(self._proc)
        self._buffer = b""
        self._proc = await anyio.open_process(
            [sys.executable, "-m", "bus._worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,  # the worker's logs go where ours go
        )
        _live[self] = os.getpid()
        await self._request("open", self._pickled)

    async def _request(self, op: str, payload: Any = None) -> Any:
        proc = self._proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        try:
            await proc.stdin.send(pack(op, payload))
            body = await self._read_reply(proc)
        except anyio.get_cancelled_exc_class():
            # Abandoned mid-call (shutdown timeout): the worker's state is unknown; end it.
            self._proc = None
            await _end(proc)
            raise
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream, OSError) as exc:
            self._proc = None
            await _end(proc)
            code = proc.returncode
            raise WorkerDied(f"worker of {self.name!r} died (exit code {code}): {exc!r}") from exc
        status, value = unpack(body)
        if status != "ok":
            raise WorkerError(value)
        return value

    async def _read_reply(self, proc: Process) -> bytes:
        assert proc.stdout is not None
        while True:
            if len(self._buffer) >= HEADER.size:
                (size,) = HEADER.unpack_from(self._buffer)
                end = HEADER.size + size
                if len(self._buffer) >= end:
                    body, self._buffer = self._buffer[HEADER.size : end], self._buffer[end:]
                    return body
            self._buffer += await proc.stdout.receive()

    def __getstate__(self) -> dict[str, Any]:
        raise TypeError("a ProcessSink cannot itself be sent to a worker process")


async def _end(proc: Process) -> None:
    """Kill (if still running), reap, and close the pipes, even while being cancelled."""
    _kill(proc)
    with anyio.CancelScope(shield=True):
        await proc.aclose()


def _kill(proc: Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()


@atexit.register
def _kill_workers() -> None:
    """No worker outlives its parent, even when the bus was never closed (a forked child leaves
    its parent's workers alone)."""
    for sink, parent in list(_live.items()):
        if sink._proc is not None and parent == os.getpid():
            _kill(sink._proc)
