"""A job: the ranks of one launch that share one sink host on each machine.

The ranks find their job in the launcher's environment (torchrun, Accelerate and Lightning set
the same variables: `RANK`, `WORLD_SIZE`, `LOCAL_WORLD_SIZE`, and `TORCHELASTIC_RUN_ID` or
`MASTER_ADDR`/`MASTER_PORT`), or from an explicit name (`MetricLogger(job="name")`). Every
rank of a job on this machine computes the same run directory from it; there, a lock file and
the job host's Unix socket:

    <tmp>/metricbus-<uid>/job-<hash>/host.lock    who may connect or start a host, one at a time
    <tmp>/metricbus-<uid>/job-<hash>/host.sock    the job host's socket (bus.wire frames)

`attach` takes the lock, connects to the host if there is one and otherwise starts it and waits
until it listens, then lets go: when every rank starts at the same instant, the first to get the
lock starts the one host and the others find it. A host that decides to exit takes the same lock
first and keeps it until it has exited, so a rank never connects to a host on its way out (it
waits, then starts the next one).

A host that was killed is on its way out without the lock: for a moment after its connections
ended, its listening socket may still take a connection (the kernel queues it) that nobody will
ever serve. So a host greets every rank it accepts (an empty HELLO frame), and `attach` counts a
connection only once greeted; one that ends first was a dead host's, and `attach` tries again
(the socket refuses by then, and it starts the next host).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import msgspec

from .. import wire
from .._errors import InvalidConfig
from ..wire import Op

__all__ = ["GREETING", "Job", "attach", "job_from_env", "lock_run_dir", "peer_pid", "run_dir"]

_SOCKET_MAX = 100  # sun_path holds 108 bytes; keep clear of it
GREETING = wire.frame(Op.HELLO, 0, b"")  # what a job host sends each rank it accepts, first


class Job(msgspec.Struct, frozen=True):
    """This process's place in a job: `key` identifies the job on this machine, `name` is what
    messages show, `rank` this process's rank of `world_size`, `local_world_size` the ranks on
    this machine (the host waits for that many before it may drain)."""

    key: str
    name: str
    rank: int
    world_size: int
    local_world_size: int

    @property
    def one_machine(self) -> bool:
        """True when every rank of the job runs on this machine (its host sees them all)."""
        return self.local_world_size == self.world_size


def _int(environ: Mapping[str, str], name: str) -> int | None:
    raw = environ.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise InvalidConfig(f"the environment variable {name}={raw!r} is not an integer") from None


def job_from_env(job: str | bool | None, environ: Mapping[str, str] = os.environ) -> Job | None:
    """The job this process is a rank of, or None (a process on its own: today's private host).

    `job`: None finds it in the launcher's environment (no launcher: None); False: never a job;
    a string: the job of that name (its rank and world size from RANK and WORLD_SIZE, which
    must then be set)."""
    if job is False:
        return None
    if job is not None and job is not True and (not isinstance(job, str) or not job):
        raise InvalidConfig(f"job must be a non-empty name, True, False or None, got {job!r}")
    rank, world = _int(environ, "RANK"), _int(environ, "WORLD_SIZE")
    local = _int(environ, "LOCAL_WORLD_SIZE")
    if isinstance(job, str):
        if rank is None or world is None:
            raise InvalidConfig(f"job={job!r} needs RANK and WORLD_SIZE in the environment (the launcher sets them)")
        key, name = f"name:{job}", job
    else:
        run_id = environ.get("TORCHELASTIC_RUN_ID", "")
        master = f"{environ.get('MASTER_ADDR', '')}:{environ.get('MASTER_PORT', '')}"
        if rank is None or world is None or (not run_id and master == ":"):
            if job is True:
                raise InvalidConfig("job=True but no launcher's environment (RANK, WORLD_SIZE, MASTER_ADDR/PORT)")
            return None
        key = f"launch:{run_id}|{master}"
        name = f"{run_id or 'job'}@{master}" if master != ":" else run_id
    if not 0 <= rank < world:
        raise InvalidConfig(f"RANK={rank} is not a rank of WORLD_SIZE={world}")
    if local is None or not 0 < local <= world:
        local = world
    return Job(key=key, name=name, rank=rank, world_size=world, local_world_size=local)


def run_dir(job: Job) -> Path:
    """The job's run directory on this machine (made, private to this user)."""
    digest = hashlib.sha256(job.key.encode()).hexdigest()[:16]
    root = Path(tempfile.gettempdir())
    if len(str(root)) > _SOCKET_MAX - 48:  # a long TMPDIR would not fit a socket path
        root = Path("/tmp")
    path = root / f"metricbus-{os.getuid()}" / f"job-{digest}"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def lock_run_dir(run: Path, deadline: float) -> int | None:
    """Take the run directory's lock, waiting until `deadline` (time.monotonic()); its fd (close
    it to let go), or None if the deadline came first."""
    fd = os.open(run / "host.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                return None
            time.sleep(0.005)


def attach(
    run: Path, spawn: Callable[[], subprocess.Popen[bytes]], timeout: float
) -> tuple[socket.socket, subprocess.Popen[bytes] | None]:
    """Connect to the job's host, starting it if there is none: (the connected socket, the host
    process if this call started it). Raises `TimeoutError` if no host listens within `timeout`
    seconds (a host still draining from an earlier phase of the job is waited for)."""
    deadline = time.monotonic() + timeout
    lock = lock_run_dir(run, deadline)
    if lock is None:
        raise TimeoutError(f"the job's run directory {run} stayed locked for {timeout:.0f}s")
    try:
        path = run / "host.sock"
        while True:
            sock = _connect(path)
            if sock is None:
                break
            if _greeted(sock, deadline):
                return sock, None
            sock.close()  # a killed host's socket, still queueing connections for a moment
            if time.monotonic() >= deadline:
                raise TimeoutError(f"the job host's socket {path} took connections it never served")
            time.sleep(0.005)
        path.unlink(missing_ok=True)  # a host that died left it; nobody listens
        proc = spawn()
        while True:
            sock = _connect(path)
            if sock is not None:
                if _greeted(sock, deadline):
                    return sock, proc
                sock.close()
            if proc.poll() is not None:
                raise OSError(f"the job host exited at start (exit code {proc.returncode})")
            if time.monotonic() >= deadline:
                proc.kill()
                proc.wait()
                raise TimeoutError(f"the job host did not listen on {path} within {timeout:.0f}s")
            time.sleep(0.005)
    finally:
        os.close(lock)


def _connect(path: Path) -> socket.socket | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
    except OSError as exc:
        sock.close()
        if exc.errno in (errno.ENOENT, errno.ECONNREFUSED):
            return None
        raise
    return sock


def _greeted(sock: socket.socket, deadline: float) -> bool:
    """Wait for the host's greeting on a new connection: True once it came; False if the
    connection ended first (the host is dead). A host that is alive but slow is waited for, up to
    `deadline` (then `TimeoutError`)."""
    got = b""
    try:
        while len(got) < len(GREETING):
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            try:
                chunk = sock.recv(len(GREETING) - len(got))
            except TimeoutError:
                raise TimeoutError("the job host accepted this rank but did not answer in time") from None
            except OSError:  # ECONNRESET: the host died
                return False
            if not chunk:
                return False
            got += chunk
    finally:
        sock.settimeout(None)
    if got != GREETING:
        raise OSError(f"the job's socket answered {got!r}, not a job host's greeting")
    return True


def peer_pid(sock: socket.socket) -> int | None:
    """The pid of the process at the other end of a Unix socket (Linux), else None."""
    with contextlib.suppress(OSError, AttributeError):
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        return int(struct.unpack("3i", creds)[0])
    return None
