"""Producers: how training code reaches the bus.

Everything but MetricLogger is loaded on first use, so importing `producers` stays light.
"""

from typing import TYPE_CHECKING

from bus.lazy import lazy_exports

from ._logger import MetricLogger

if TYPE_CHECKING:
    from ._frequency import LogFrequency
    from ._nan_guard import NanGuard
    from ._pipeline_metrics import PipelineMetrics, sink_label
    from ._redis_source import RedisSource, origin_from_env
    from ._replay import ReplayStats, replay
    from ._stats_table import format_stats, print_stats, stats_table
    from ._summary_writer import SummaryWriter
    from ._system import SystemSampler

_LAZY = {
    "LogFrequency": "._frequency",
    "NanGuard": "._nan_guard",
    "PipelineMetrics": "._pipeline_metrics",  # the pipeline's own health as series in the sinks
    "sink_label": "._pipeline_metrics",
    "format_stats": "._stats_table",  # the per-sink stats table every command prints
    "print_stats": "._stats_table",
    "stats_table": "._stats_table",
    "RedisSource": "._redis_source",  # the Redis bridge; imports redis only when it runs
    "origin_from_env": "._redis_source",
    "SummaryWriter": "._summary_writer",
    "SystemSampler": "._system",
    "ReplayStats": "._replay",
    "replay": "._replay",
}

__all__ = [
    "LogFrequency",
    "MetricLogger",
    "NanGuard",
    "PipelineMetrics",
    "RedisSource",
    "ReplayStats",
    "SummaryWriter",
    "SystemSampler",
    "format_stats",
    "origin_from_env",
    "print_stats",
    "replay",
    "sink_label",
    "stats_table",
]


__getattr__ = lazy_exports(__name__, _LAZY)
