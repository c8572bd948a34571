"""Producers: how training code reaches the bus.

Everything but MetricLogger is loaded on first use, so importing `producers` stays light.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

from ._logger import MetricLogger

if TYPE_CHECKING:
    from ._frequency import LogFrequency
    from ._nan_guard import NanGuard
    from ._summary_writer import SummaryWriter
    from ._system import SystemSampler

_LAZY = {
    "LogFrequency": "._frequency",
    "NanGuard": "._nan_guard",
    "SummaryWriter": "._summary_writer",
    "SystemSampler": "._system",
}

__all__ = ["LogFrequency", "MetricLogger", "NanGuard", "SummaryWriter", "SystemSampler"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
