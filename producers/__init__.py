"""Producers: how training code reaches the bus.

Everything but MetricLogger is loaded on first use, so importing `producers` stays light.
"""

from typing import TYPE_CHECKING

from bus.lazy import lazy_exports

from ._logger import MetricLogger

if TYPE_CHECKING:
    from ._frequency import LogFrequency
    from ._nan_guard import NanGuard
    from ._redis_source import RedisSource, origin_from_env
    from ._replay import ReplayStats, replay
    from ._summary_writer import SummaryWriter
    from ._system import SystemSampler

_LAZY = {
    "LogFrequency": "._frequency",
    "NanGuard": "._nan_guard",
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
    "RedisSource",
    "ReplayStats",
    "SummaryWriter",
    "SystemSampler",
    "origin_from_env",
    "replay",
]


__getattr__ = lazy_exports(__name__, _LAZY)
