"""metricbus's core: typed events, the bus, the Sink protocol, stats and errors.

Imports nothing heavy: no wandb, no tensorboardX, no torch, no numpy.
"""

from ._bus import MetricBus
from ._config import RetryPolicy, SinkConfig, WhenFull
from ._errors import (
    BusClosed,
    BusFull,
    BusStateError,
    DeliveryError,
    InvalidConfig,
    InvalidEvent,
    InvalidSinkResult,
    MetricBusError,
    SinkAlreadyAdded,
    StopTraining,
    WorkerDied,
    WorkerError,
)
from ._events import (
    DEFAULT_ORIGIN,
    EVENT_TYPES,
    Audio,
    ChartLayout,
    Context,
    Embedding,
    Event,
    Graph,
    Histogram,
    Hparams,
    Image,
    Mesh,
    Metrics,
    Origin,
    PrCurve,
    Scalar,
    Text,
    Video,
)
from ._process import ProcessSink
from ._rate import RateLimit
from ._sink import Sink
from ._spool import read_spool
from ._stats import DropReason, SinkState, SinkStats

__all__ = [
    "DEFAULT_ORIGIN",
    "EVENT_TYPES",
    "Audio",
    "BusClosed",
    "BusFull",
    "BusStateError",
    "ChartLayout",
    "Context",
    "DeliveryError",
    "DropReason",
    "Embedding",
    "Event",
    "Graph",
    "Histogram",
    "Hparams",
    "Image",
    "InvalidConfig",
    "InvalidEvent",
    "InvalidSinkResult",
    "MetricBus",
    "Mesh",
    "MetricBusError",
    "Metrics",
    "Origin",
    "PrCurve",
    "ProcessSink",
    "RateLimit",
    "RetryPolicy",
    "Scalar",
    "Sink",
    "SinkAlreadyAdded",
    "SinkConfig",
    "SinkState",
    "SinkStats",
    "StopTraining",
    "Text",
    "Video",
    "WhenFull",
    "WorkerDied",
    "WorkerError",
    "read_spool",
]
