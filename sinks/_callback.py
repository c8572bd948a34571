"""CallbackSink: hand events to a plain function, per value (OpenFL's signature) or per batch.

OpenFL's `log_metric_callback(node_name, task_name, metric_name, metric, round_number)` plugs in
unchanged. The function runs on the sink's own thread, so a slow callback never blocks the bus.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar, Literal

from bus import Event, InvalidConfig, Metrics, Scalar, Sink, metric_items

__all__ = ["CallbackSink", "metric_calls"]


def metric_calls(events: Sequence[Event]) -> Iterator[tuple[str, str, str, float, int]]:
    """(node_name, task_name, metric_name, metric, round_number) for every value in `events`.

    node_name is the origin's label, task_name the context's task ("" if none), and
    round_number the context's round, or the step when the event has no round.
    """
    last_origin: object = None
    node = ""
    for event in events:
        ctx = event.context
        task = ctx.task if ctx is not None and ctx.task is not None else ""
        rnd = ctx.round if ctx is not None and ctx.round is not None else event.step
        if event.origin is not last_origin:  # a batch is mostly one origin: its label once
            last_origin = event.origin
            node = last_origin.label
        for name, value in metric_items(event):
            yield (node, task, name, value, rnd)


class CallbackSink(Sink):
    """Calls `fn` for every metric value (`per="metric"`, the OpenFL signature) or once per batch
    with the list of events (`per="batch"`, every event type)."""

    isolation: ClassVar[Literal["none", "host", "process"]] = "none"  # it calls back into this program

    def __init__(self, fn: Callable[..., Any], *, per: Literal["metric", "batch"] = "metric") -> None:
        if per not in ("metric", "batch"):
            raise InvalidConfig(f"per must be 'metric' or 'batch', got {per!r}")
        if not callable(fn):
            raise InvalidConfig(f"fn must be callable, got {type(fn).__name__}")
        self.fn = fn
        self.per = per
        if per == "metric":
            self.accepts = (Scalar, Metrics)  # type: ignore[misc]

    @property
    def name(self) -> str:
        return f"callback:{getattr(self.fn, '__name__', type(self.fn).__name__)}"

    async def write_batch(self, events: Sequence[Event]) -> None:
        # The bus runs a sink on its own thread: a slow or blocking callback holds nothing else.
        if self.per == "batch":
            self.fn(list(events))
            return
        fn = self.fn
        for call in metric_calls(events):
            fn(*call)
