"""RecordFile: an append-only file of whole records, for the line-based file sinks.

A writer killed mid-write leaves a torn last record; a write that fails midway leaves part of a
batch. Either would make the next run's appended lines unparseable, so both are cut off here,
in one place, for CSV and JSONL alike.

A sink host (private or a job's) that is killed may also have appended whole batches it had not
recorded as written yet; its successor sends them again. `end` is where the last append ended, which the
host records with what its sinks settled, and `resume` (set before `open`) cuts the file back
to it, so those batches are written once.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import aiofiles
from aiofiles.threadpool.binary import AsyncFileIO

__all__ = ["RecordFile"]

log = logging.getLogger("metricbus")


class RecordFile:
    """An append-only file of whole records: each `append` lands all of its bytes or none.

    Writes are unbuffered, so nothing of a failed write waits in a buffer to reach the disk later;
    bytes a failed write did put on disk are cut off before the next append, and on close.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: AsyncFileIO | None = None
        self._end = 0  # bytes of whole records in the file
        self._torn = False  # a write failed midway: bytes past _end may be a partial record
        self.resume: int | None = None  # set before open: cut back to this end (a crashed writer's)
        self._ready = False  # open, and no append under way: `_end` is where the file ends

    @property
    def end(self) -> int | None:
        """Where the last whole append ended; None while opening, appending or closed (the file
        may end elsewhere then)."""
        return self._end if self._ready and not self._torn else None

    async def open(self, end: int | None = None) -> None:
        """Open for appending, cutting off what follows `end`, where the last whole record ends
        (the torn tail of a writer that was killed mid-write); None: the file is whole."""
        await self.close()  # a retried open
        self._ready = False
        self._file = await aiofiles.open(self.path, "ab", buffering=0)
        size = await self._file.seek(0, os.SEEK_END)
        resume, self.resume = self.resume, None  # once: a retried open keeps what was appended since
        if resume is not None and size > resume and (end is None or resume < end):
            await self._file.truncate(resume)
            log.warning(
                "%s: cut %d bytes a crashed writer appended after its last recorded batch", self.path, size - resume
            )
            size = resume
        elif end is not None and size > end:
            await self._file.truncate(end)
            log.warning("%s: dropped %d bytes of a torn last record before appending", self.path, size - end)
            size = end
        self._end = size
        self._ready = True

    async def append(self, data: bytes) -> None:
        """Write `data` (whole records) at the end of the file; if this raises, none of it counts."""
        assert self._file is not None
        await self._cut_torn_write()
        self._torn = True
        view = memoryview(data)
        while view:  # an unbuffered write may take only part of the bytes
            view = view[await self._file.write(view) :]
        self._torn = False
        self._end += len(data)

    async def close(self) -> None:
        """Cut off a failed write's bytes, then close. If the cut fails the file stays open."""
        self._ready = False
        if self._file is None:
            return
        await self._cut_torn_write()
        file, self._file = self._file, None
        await file.close()

    async def _cut_torn_write(self) -> None:
        assert self._file is not None
        if self._torn:
            await self._file.truncate(self._end)
            self._torn = False
