"""Sink hosts: the processes that run a training process's sinks, as the producers use them.

`place` decides where a sink runs, a `HostLink` is one host process seen from the training
process, a `JobLink` the shared host of a job's ranks on this machine (`job_from_env` finds the
job), and a `Pump` is the background thread that serves the links. `MetricBus` and
`producers.MetricLogger` build on these; users only choose `isolate=` in `add_sink`.
"""

from .._claims import claim_sink, release_sink
from ._job import Job, job_from_env
from ._job_link import JobLink
from ._link import HostLink
from ._placement import PLACEMENTS, Placement, movable, place
from ._pump import Pump

__all__ = [
    "PLACEMENTS",
    "HostLink",
    "Job",
    "JobLink",
    "Placement",
    "Pump",
    "claim_sink",
    "job_from_env",
    "movable",
    "place",
    "release_sink",
]
