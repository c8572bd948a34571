"""metricbus's core: typed events, the bus, the Sink protocol, stats and errors.

Imports nothing heavy: no wandb, no tensorboardX, no torch, no numpy.
"""

from . import lazy, wire
from ._bus import MetricBus
from ._config import RetryPolicy, SinkConfig, WhenFull, sink_config
from ._delivery import check_delivery, delivery_failures, describe_failure
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
    RunConfig,
    RunSummary,
    Scalar,
    Tensor,
    Text,
    Video,
)
from ._file_locks import check_folder
from ._flatten import metric_items
from ._rank_reduce import (
    MISSING_METRIC,
    REDUCE_KEY,
    MissingRank,
    RankReduce,
    RankReducer,
    RankReduction,
    RankStats,
    declare_reductions,
    missing_lines,
)
from ._rate import RateLimit
from ._sink import Sink
from ._spool import read_segments, read_spool
from ._stats import DropReason, SinkState, SinkStats, accepted_share
from ._validate import IMAGE_CHANNELS, as_step, as_value, known_names
from ._validate_media import TENSOR_DTYPES

__all__ = [
    "DEFAULT_ORIGIN",
    "EVENT_TYPES",
    "IMAGE_CHANNELS",
    "MISSING_METRIC",
    "REDUCE_KEY",
    "TENSOR_DTYPES",
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
    "MissingRank",
    "Metrics",
    "Origin",
    "PrCurve",
    "RankReduce",
    "RankReducer",
    "RankReduction",
    "RankStats",
    "RateLimit",
    "RetryPolicy",
    "RunConfig",
    "RunSummary",
    "Scalar",
    "Sink",
    "SinkAlreadyAdded",
    "SinkConfig",
    "SinkState",
    "SinkStats",
    "StopTraining",
    "Tensor",
    "Text",
    "Video",
    "WhenFull",
    "accepted_share",
    "as_step",
    "as_value",
    "check_delivery",
    "check_folder",
    "delivery_failures",
    "describe_failure",
    "known_names",
    "lazy",
    "metric_items",
    "declare_reductions",
    "missing_lines",
    "read_segments",
    "read_spool",
    "sink_config",
    "wire",
]
