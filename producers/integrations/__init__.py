"""Thin adapters from frameworks' logging hooks to metricbus.

Each is loaded on first use, so a framework is imported only by the adapter that needs it
(`pip install 'metricbus[lightning]'`, `[transformers]` (which brings Accelerate too), `[accelerated]`).
"""

from typing import TYPE_CHECKING

from bus.lazy import lazy_exports

if TYPE_CHECKING:
    from ._accelerate import MetricBusTracker
    from ._accelerated import MetricBusLogMetricsCallback
    from ._itwinai import ItwinaiLogger
    from ._lightning import MetricBusLogger
    from ._nemo import EvaluatorCallback, SimpleLossLoggerCallback, WandbCallback
    from ._nvflare import NVFlareWriter
    from ._openfl import openfl_callback
    from ._transformers import MetricBusCallback

_LAZY = {
    "MetricBusLogger": "._lightning",
    "MetricBusCallback": "._transformers",
    "MetricBusLogMetricsCallback": "._accelerated",
    "MetricBusTracker": "._accelerate",
    "openfl_callback": "._openfl",
    "NVFlareWriter": "._nvflare",
    "ItwinaiLogger": "._itwinai",
    "SimpleLossLoggerCallback": "._nemo",
    "EvaluatorCallback": "._nemo",
    "WandbCallback": "._nemo",
}

__all__ = [
    "EvaluatorCallback",
    "ItwinaiLogger",
    "MetricBusCallback",
    "MetricBusLogMetricsCallback",
    "MetricBusLogger",
    "MetricBusTracker",
    "NVFlareWriter",
    "SimpleLossLoggerCallback",
    "WandbCallback",
    "openfl_callback",
]


__getattr__ = lazy_exports(__name__, _LAZY)
