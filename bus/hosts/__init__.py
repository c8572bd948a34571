"""Sink hosts: the processes that run a training process's sinks, as the producers use them.

`place` decides where a sink runs, a `HostLink` is one host process seen from the training
process, and a `Pump` is the background thread that serves the links. `MetricBus` and
`producers.MetricLogger` build on these; users only choose `isolate=` in `add_sink`.
"""

from .._claims import claim_sink, release_sink
from ._link import HostLink
from ._placement import PLACEMENTS, Placement, movable, place
from ._pump import Pump

__all__ = ["PLACEMENTS", "HostLink", "Placement", "Pump", "claim_sink", "movable", "place", "release_sink"]
