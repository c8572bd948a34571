"""The worker process that runs one sink: `python -m bus._worker`.

It reads requests from stdin and answers on stdout, one at a time, so it needs no locking. It
ignores Ctrl-C (the parent drains and closes it on shutdown) and exits when stdin closes or its
parent disappears, so it can never outlive the training process.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import threading
import time
from typing import BinaryIO

import anyio

from ._sink import Sink
from ._wire import HEADER, decode_batch, pack, unpack


def _read_exact(stream: BinaryIO, n: int) -> bytes | None:
    chunks = []
    while n:
        chunk = stream.read(n)
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _watch_parent(parent: int) -> None:
    """Exit if the parent dies while this worker is busy inside a sink call."""
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(3)


async def _serve(stdin: BinaryIO, stdout: BinaryIO) -> None:
    sink: Sink | None = None
    while True:
        header = _read_exact(stdin, HEADER.size)
        if header is None:
            break
        body = _read_exact(stdin, HEADER.unpack(header)[0])
        if body is None:
            break
        op, payload = unpack(body)
        reply: int | None = None
        try:
            if op == "open":
                sink = pickle.loads(payload)
                assert isinstance(sink, Sink)
                await sink.open()
            elif op == "write":
                assert sink is not None
                reply = await sink.write_batch(decode_batch(payload))
            elif op == "flush":
                assert sink is not None
                await sink.flush()
            elif op == "close":
                assert sink is not None
                await sink.close()
            else:
                raise ValueError(f"unknown op {op!r}")
            message = pack("ok", reply)
        except Exception as exc:  # reported to the parent, which retries or fails the sink
            message = pack("error", f"{type(exc).__name__}: {exc}")
        stdout.write(message)
        stdout.flush()
        if op == "close":
            break


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # a sink that prints must not corrupt the reply stream
    anyio.run(_serve, stdin, stdout)


if __name__ == "__main__":
    main()
