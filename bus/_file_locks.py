"""One writer per file, and mistakes found at the call that made them.

Every file a sink writes (`Sink.exclusive_paths`; a sink that writes a folder names a lock file
in it) is locked (`flock`) for the process
that feeds the sink, from `add_sink` until the bus closes; the kernel releases the lock when that
process dies, so a crashed run never leaves a stale lock behind. A second process given the same
path gets `InvalidConfig` at its `add_sink`, naming the process that holds it, and so never
opens (or repairs the torn last record of) a file another process is writing. A sink host runs
its sinks under the lock of the training process that started it.

Taking the lock is also the check that the path can be written at all: a path under a regular
file, on a read-only filesystem, in /sys or /proc, or a folder where a file is expected is a
mistake (`InvalidConfig`, now); a full disk or a quota is an outage, which the sink waits out.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from pathlib import Path

from ._errors import InvalidConfig

__all__ = ["MISTAKES", "RUNTIME_MISTAKES", "check_folder", "lock_path"]

#: errno values that say a path can never be written as given (not: not yet).
MISTAKES = frozenset(
    {
        errno.ENOTDIR,
        errno.EISDIR,
        errno.EEXIST,  # makedirs: a regular file where a folder must be
        errno.EROFS,
        errno.EACCES,
        errno.EPERM,
        errno.ENAMETOOLONG,
        errno.ELOOP,
        errno.EINVAL,
        errno.ENOENT,  # a folder that cannot be made (/proc)
    }
)

#: errno values that mean a mistake when a sink's call fails later too (its route fails it rather
#: than waiting for it): ENOENT and EINVAL are left out, a share that went away can come back.
RUNTIME_MISTAKES = frozenset({errno.ENOTDIR, errno.EISDIR, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENAMETOOLONG})

_WHY = {
    errno.EEXIST: "a part of the path is a file, not a folder",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "it is a folder, not a file",
    errno.EROFS: "the filesystem is read-only",
    errno.ENOENT: "its folder cannot be made there",
}


def lock_path(path: Path, sink_name: str) -> int | None:
    """Lock the file `path` (created, with its folders, if missing) for this process; returns the
    locked fd, to close on release. None when there is nothing to lock (a
    device such as /dev/null, a FIFO) or the disk refuses for a reason that can pass (full,
    quota): the sink then finds it down and waits. Raises `InvalidConfig` for a path that cannot
    be written, or that another process holds."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    except OSError as exc:
        if exc.errno in MISTAKES:
            why = _WHY.get(exc.errno or 0, exc.strerror or str(exc))
            raise InvalidConfig(f"sink {sink_name!r} cannot write {path}: {why} ({exc.strerror})") from None
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # /dev/null, a FIFO: no file to protect
        os.close(fd)
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        who = f"process {holder}" if holder is not None else "another process"
        raise InvalidConfig(
            f"sink {sink_name!r}: {path} is being written by {who} (one writer per file: give each "
            "process its own path, or wait for that run to end)"
        ) from None
    except OSError:  # a filesystem without locks: nothing to enforce there
        return fd
    return fd


def check_folder(path: Path, sink_name: str) -> None:
    """Raise `InvalidConfig` now if the folder `path` can never be made or written (a part of it is
    a file, a read-only filesystem, /sys, /proc); a full disk passes (an outage, waited out). For
    sinks that write a folder other processes may share (TensorBoard logdirs): nothing is locked,
    and nothing is created."""
    existing = path
    while not existing.exists():
        if existing.parent == existing:
            return
        existing = existing.parent
    if not existing.is_dir():
        raise InvalidConfig(f"sink {sink_name!r} cannot write {path}: {_WHY[errno.ENOTDIR]} ({existing})")
    if not os.access(existing, os.W_OK) or _read_only(existing):
        raise InvalidConfig(f"sink {sink_name!r} cannot write {path}: {existing} is not writable")


def _read_only(folder: Path) -> bool:
    """A read-only filesystem, or one no file can be created in (sysfs, procfs)."""
    try:
        flags = os.statvfs(folder).f_flag
    except OSError:
        return False
    return bool(flags & os.ST_RDONLY) or str(folder.resolve()).split("/")[1:2] in (["proc"], ["sys"])


def _holder(fd: int) -> int | None:
    """The pid holding a flock on the file of `fd`, from /proc/locks (Linux); None elsewhere."""
    inode = os.fstat(fd).st_ino
    with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/locks") as f:
        for line in f:
            fields = line.split()
            if "FLOCK" in fields and int(fields[-3].split(":")[-1]) == inode:
                return int(fields[-4])
    return None
