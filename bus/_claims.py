"""Which open bus (or logger) holds each sink object.

One sink object on two open buses would get every event twice, interleaved from two threads or
two host processes writing the same file: the second `add_sink` is refused. A bus releases its
sinks when it closes.
"""

from __future__ import annotations

import weakref

from ._errors import SinkAlreadyAdded
from ._sink import Sink

__all__ = ["claim_sink", "release_sink"]

_owners: dict[int, tuple[weakref.ref[Sink] | None, weakref.ref[object]]] = {}


def claim_sink(sink: Sink, owner: object) -> None:
    """Record that `owner` feeds `sink`; `SinkAlreadyAdded` if another open owner does."""
    held = _owners.get(id(sink))
    if held is not None:
        sink_ref, owner_ref = held
        same_sink = sink_ref is None or sink_ref() is sink  # an id reused by a new object is not a claim
        other = owner_ref()
        if same_sink and other is not None and other is not owner:
            raise SinkAlreadyAdded(
                f"this {type(sink).__name__} is already on another open bus (another MetricLogger?); "
                "a sink object can feed one bus at a time"
            )
    try:
        sink_ref = weakref.ref(sink)
    except TypeError:  # a sink with __slots__ and no __weakref__
        sink_ref = None
    _owners[id(sink)] = (sink_ref, weakref.ref(owner))


def release_sink(sink: Sink, owner: object) -> None:
    """`owner` no longer feeds `sink` (it closed)."""
    held = _owners.get(id(sink))
    if held is not None and held[1]() in (owner, None):
        del _owners[id(sink)]
