"""NVIDIA FLARE: a site-side writer with NVFlare's `log` / `add_scalar` shapes.

In NVFlare each site's writer streams metrics to the server, where a receiver keeps one queue
and one W&B run per site (grouped) and one TensorBoard run per site. With metricbus a site's
writer publishes with `Origin(site=...)`, and the TensorBoard and W&B sinks already place events
per origin: one run per site, the W&B runs in one `group`.
"""

from __future__ import annotations

from typing import Any

from bus import Metrics, Origin, Scalar

from .._logger import MetricLogger
from ._openfl import origin_part

__all__ = ["NVFlareWriter"]


class NVFlareWriter:
    """One site's writer over a (shared, thread-safe) MetricLogger.

    W&B/MLflow shapes: `log(metrics, step)`, `log_metrics(metrics, step)`, `log_metric(key,
    value, step)`; TensorBoard shapes: `add_scalar(tag, scalar, global_step)`, `add_scalars(tag,
    scalars, global_step)`. A call without a step takes the site's next step, as `wandb.log`
    does. Site names are made origin-safe (characters outside [A-Za-z0-9_.-] become '_').
    """

    def __init__(self, site: str, logger: MetricLogger) -> None:
        self.site = site
        self.origin = Origin(site=origin_part(site))
        self._log = logger
        self._next_step = 0

    def _step(self, step: int | None) -> int:
        at = self._next_step if step is None else step
        self._next_step = at + 1
        return at

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        """Many values at one step: one W&B row for this site's run."""
        self._log.publish(Metrics(metrics, self._step(step), origin=self.origin))

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        """MLflow writer shape; same as `log`."""
        self.log(metrics, step)

    def log_metric(self, key: str, value: Any, step: int | None = None) -> None:
        self._log.publish(Scalar(key, value, self._step(step), origin=self.origin))

    def add_scalar(self, tag: str, scalar: Any, global_step: int | None = None) -> None:
        """TensorBoard writer shape."""
        self.log_metric(tag, scalar, global_step)

    def add_scalars(self, tag: str, scalars: dict[str, Any], global_step: int | None = None) -> None:
        """TensorBoard writer shape: each entry as `tag/key`, all at one step."""
        self.log({f"{tag}/{k}": v for k, v in scalars.items()}, global_step)
