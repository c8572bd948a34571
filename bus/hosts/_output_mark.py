"""Output marks: where a file sink's output ended, recorded by a sink host (private or a job's)
with what its sinks settled, and cut back to by the host started after it was killed.

A host killed after a sink's write returned and before it recorded that write has the batch
sent again; cut back to the recorded mark first, the file holds it once (CSV's long layout and
JSONL: `output_mark` / `resume_output`). A sink without a mark may hold it twice (at least once).
"""

from __future__ import annotations

from typing import Any

from .._route import Route

__all__ = ["current_mark", "resume_output"]


def current_mark(route: Route) -> int | None:
    """Where the route's sink's output ends now, to record with what it has settled; None if the
    sink keeps no mark, or is writing a batch (its output may end past what is settled then):
    the mark recorded before stays."""
    output_mark = getattr(route.sink, "output_mark", None)
    if output_mark is None or route.in_flight > 0:
        return None
    mark: int | None = output_mark()
    return mark


def resume_output(sink: Any, mark: int | None) -> bool:
    """Before the sink opens: have it cut its output back to `mark`, where a killed predecessor's
    record says it ended (what that host wrote after it is sent again). False if it cannot be cut
    back: no mark was recorded, or the sink keeps none."""
    resume = getattr(sink, "resume_output", None)
    if mark is None or resume is None:
        return False
    resume(mark)
    return True
