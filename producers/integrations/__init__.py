"""Thin adapters from frameworks' logging hooks to metricbus.

Each is loaded on first use, so a framework is imported only by the adapter that needs it
(`pip install 'metricbus[lightning]'`, `[transformers]`, `[accelerated]`).
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._accelerated import MetricBusLogMetricsCallback
    from ._itwinai import ItwinaiLogger
    from ._lightning import MetricBusLogger
    from ._nvflare import NVFlareWriter
    from ._openfl import openfl_callback
    from ._transformers import MetricBusCallback

_LAZY = {
    "MetricBusLogger": "._lightning",
    "MetricBusCallback": "._transformers",
    "MetricBusLogMetricsCallback": "._accelerated",
    "openfl_callback": "._openfl",
    "NVFlareWriter": "._nvflare",
    "ItwinaiLogger": "._itwinai",
}

__all__ = [
    "ItwinaiLogger",
    "MetricBusCallback",
    "MetricBusLogMetricsCallback",
    "MetricBusLogger",
    "NVFlareWriter",
    "openfl_callback",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
