"""OpenFL: a metric callback with OpenFL's exact signature, publishing to metricbus.

OpenFL calls `callback(node_name, task_name, metric_name, metric, round_number)` on the
aggregator for every metric of every task. `openfl_callback(log)` returns such a function:
the node (a collaborator, or the aggregator) becomes the event's origin site, as NVFlareWriter's
sites do: federated participants label their runs by their bare name ("col1"). The task and round
become its context, the round its step.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from bus import Context, Origin, Scalar

from .._logger import MetricLogger

__all__ = ["openfl_callback", "origin_part"]

_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")

MetricCallback = Callable[[str, str, str, Any, int], None]


def origin_part(name: str) -> str:
    """A collaborator or site name as an origin part: characters outside [A-Za-z0-9_.-] become '_'
    and the name is cut to 128 characters (names differing only there share an origin)."""
    cleaned = _UNSAFE.sub("_", str(name))[:128]
    return cleaned if cleaned not in ("", ".", "..") else "_"


def _scalar(metric: Any) -> Any:
    """OpenFL passes np.ndarray metrics, often of shape (1,): one element is a scalar."""
    size = getattr(metric, "size", None)
    if size == 1 and getattr(metric, "ndim", 0) != 0:
        return metric.reshape(()).item()
    return metric


def openfl_callback(logger: MetricLogger) -> MetricCallback:
    """A `log_metric_callback` for OpenFL's plan that publishes every metric to `logger`."""
    origins: dict[str, Origin] = {}

    def write_metric(node_name: str, task_name: str, metric_name: str, metric: Any, round_number: int) -> None:
        origin = origins.get(node_name)
        if origin is None:
            origin = origins[node_name] = Origin(site=origin_part(node_name))
        context = Context(task=task_name or None, round=round_number)
        logger.publish(Scalar(metric_name, _scalar(metric), round_number, origin=origin, context=context))

    return write_metric
