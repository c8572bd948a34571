"""What a job host offered each sink and the sink has not settled yet, so that a settled count
becomes the identities the progress record keeps (`_job_progress.py`).

A route counts what it settled, in the order it was offered. The job host offers each route
chunks: a rank's batch after the reducer (that rank's events, and the rows of the steps the batch
closed) or rows alone (deadlines, a rank leaving, the drain). The ledger keeps those chunks until
settled, and turns each settled event into the record's terms: a rank's event is (its batch, its
index there), a row is (its job, its step). It also filters what a predecessor settled out of
what is offered again after a crash.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from .._events import Event
from ._job_progress import RouteProgress, Steps

__all__ = ["Batch", "Ledger", "Rows", "rows_of"]


class Batch:
    """One rank's batch as the host received it: `key` names the rank ("rank/pid/link"), `seq` is its
    batch number, `index` each of its events' place in it (by identity: the reducer passes the
    same objects on)."""

    __slots__ = ("index", "key", "seq")

    def __init__(self, key: str, seq: int, events: Sequence[Event]) -> None:
        self.key, self.seq = key, seq
        self.index = {id(event): i for i, event in enumerate(events)}


Rows = list[tuple[int, Event]]
"""The job's rows among a chunk's events, with their places in it."""


def rows_of(events: Sequence[Event], batch: Batch | None) -> Rows:
    """The rows among `events` (of `batch`, or rows alone): the events that are not the batch's."""
    if batch is None:
        return list(enumerate(events))
    index = batch.index
    return [(i, event) for i, event in enumerate(events) if id(event) not in index]


class _Chunk:
    """Events offered to a route at once: `end` is the route's `published` after them, `done` how
    many of them the ledger counted settled already, `rows` the job's rows among them (with their
    places), of which `rows_done` are counted."""

    __slots__ = ("batch", "done", "end", "events", "rows", "rows_done")

    def __init__(self, events: list[Event], batch: Batch | None, rows: Rows, end: int) -> None:
        self.events, self.batch, self.rows, self.end = events, batch, rows, end
        self.done = self.rows_done = 0


class Ledger:
    """One route of a job host: its settled state (`progress`, what the record keeps) and the
    chunks offered to it and not settled yet. `skipped` counts the events not offered because a
    host before this one had settled them."""

    def __init__(self, progress: RouteProgress | None = None) -> None:
        self.progress = progress if progress is not None else RouteProgress()
        self.rows = {site: Steps(ranges) for site, ranges in self.progress.rows.items()}
        self.progress.rows = {site: steps.ranges for site, steps in self.rows.items()}  # one list, shared
        self.chunks: deque[_Chunk] = deque()
        self.skipped = 0

    def take(self, events: list[Event], batch: Batch | None, rows: Rows, published: int) -> list[Event]:
        """What of `events` (this route's share of a chunk, in order, `rows` among them) the route
        is to be offered now, its `published` count being `published`: all but what is settled
        already (a rank's events up to its last settled one, the rows of steps settled), noted
        until settled."""
        mark = self.progress.ranks.get(batch.key) if batch is not None else None
        if mark is not None and batch is not None and batch.seq > mark[0]:
            mark = None  # a batch after the last settled one: only its rows can be settled
        if mark is not None or any(self._has_row(row) for _, row in rows):
            events = self._unsettled(events, batch, mark)
            rows = rows_of(events, batch)
        if events:
            self.chunks.append(_Chunk(events, batch, rows, published + len(events)))
        return events

    def settle(self, settled: int, *, writing: bool = False, mark: int | None = None) -> bool:
        """The route has settled `settled` events in all: record what they were, and `mark`,
        where its sink's output ends with them (`current_mark`; None: the last one stays).
        `writing`: a batch is being written. True if the progress changed."""
        changed = False
        if mark is not None and mark != self.progress.mark:
            self.progress.mark = mark
            changed = True
        if not writing and self.progress.writing:
            self.progress.writing = 0  # settled (or given up): nothing is being written
            changed = True
        chunks = self.chunks
        while chunks:
            chunk = chunks[0]
            events = chunk.events
            size = len(events)
            upto = min(size, settled - (chunk.end - size))
            if upto <= chunk.done:
                break
            rows, at = chunk.rows, chunk.rows_done
            while at < len(rows) and rows[at][0] < upto:
                row = rows[at][1]
                self._row(row.origin.site, row.step)
                at += 1
            chunk.rows_done = at
            batch = chunk.batch
            if batch is not None:  # the last of the batch's events now settled: before the rows at its end
                last, back = upto - 1, at - 1
                while back >= 0 and rows[back][0] == last:
                    last, back = last - 1, back - 1
                if last >= chunk.done:
                    self.progress.ranks[batch.key] = (batch.seq, batch.index[id(events[last])])
            chunk.done = upto
            changed = True
            if upto < size:
                break
            chunks.popleft()
        return changed

    def unrecorded_writing(self) -> bool:
        """Count every event offered and not recorded as settled as `writing` (a route whose
        count is no prefix of what it wrote: any of them may be written). True if that changed."""
        pending = sum(len(chunk.events) - chunk.done for chunk in self.chunks)
        if pending == self.progress.writing:
            return False
        self.progress.writing = pending
        return True

    def forget(self, key: str) -> None:
        """Rank `key` left with everything acknowledged: it will send nothing again."""
        self.progress.ranks.pop(key, None)

    def _has_row(self, row: Event) -> bool:
        steps = self.rows.get(row.origin.site)
        return steps is not None and row.step in steps

    def _unsettled(self, events: list[Event], batch: Batch | None, mark: tuple[int, int] | None) -> list[Event]:
        index = batch.index if batch is not None else None
        out: list[Event] = []
        for event in events:
            i = index.get(id(event)) if index is not None else None
            if i is None:
                settled = self._has_row(event)
            else:
                settled = mark is not None and batch is not None and (batch.seq, i) <= mark
            if settled:
                self.skipped += 1
            else:
                out.append(event)
        return out

    def _row(self, site: str, step: int) -> None:
        steps = self.rows.get(site)
        if steps is None:
            steps = self.rows[site] = Steps()
            self.progress.rows[site] = steps.ranges
        steps.add(step)
