"""NVIDIA FLARE: a site-side writer with NVFlare's `log` / `add_scalar` shapes.

In NVFlare each site streams metrics to the server, where a receiver writes one TensorBoard run
and one W&B run per site. With metricbus a site's writer publishes with `Origin(site=...)`, and the
TensorBoard and W&B sinks already place events per origin: one run per site, W&B runs in one group.
"""

from __future__ import annotations

from typing import Any

from bus import Origin, Scalar

from .._logger import MetricLogger
from ._openfl import origin_part

__all__ = ["NVFlareWriter"]


class NVFlareWriter:
    """One site's writer: `log(metrics, step)`, `log_metric(key, value, step)`,
    `add_scalar(tag, scalar, global_step)` and `add_scalars(tag, scalars, global_step)`."""

    def __init__(self, site: str, logger: MetricLogger) -> None:
        self.site = site
        self.origin = Origin(site=origin_part(site))
        self._log = logger

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        """MLflow/W&B writer shape: many values at one step (one W&B row)."""
        from bus import Metrics

        self._log.publish(Metrics(metrics, 0 if step is None else step, origin=self.origin))

    def log_metric(self, key: str, value: Any, step: int | None = None) -> None:
        self._log.publish(Scalar(key, value, 0 if step is None else step, origin=self.origin))

    def add_scalar(self, tag: str, scalar: Any, global_step: int | None = None) -> None:
        """TensorBoard writer shape."""
        self.log_metric(tag, scalar, global_step)

    def add_scalars(self, tag: str, scalars: dict[str, Any], global_step: int | None = None) -> None:
        self.log({f"{tag}/{k}": v for k, v in scalars.items()}, global_step)
