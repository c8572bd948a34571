"""MetricBusLogMetricsCallback: pytorch_accelerated's LogMetricsCallback, publishing to metricbus."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bus import DEFAULT_ORIGIN, Context, Origin, Sink

from .._logger import MetricLogger
from ._common import LoggerHandle, numeric

try:
    from pytorch_accelerated.callbacks import LogMetricsCallback
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "MetricBusLogMetricsCallback needs pytorch_accelerated: pip install 'metricbus[accelerated]'"
    ) from exc

__all__ = ["MetricBusLogMetricsCallback"]


class MetricBusLogMetricsCallback(LogMetricsCallback):  # type: ignore[misc]
    """`Trainer(..., callbacks=(*DEFAULT_CALLBACKS, MetricBusLogMetricsCallback(sinks=[...])))`.

    Epoch ends: the latest value of every run-history metric (the seed's LogMetricsCallback,
    whose `log_metrics` is the one method platforms override), at step = the epoch.
    Step ends: the batch loss as `train_loss_step`, at a running step count, with the epoch as
    context. Only the main process publishes.
    """

    def __init__(
        self,
        sinks: Iterable[Sink] = (),
        *,
        logger: MetricLogger | None = None,
        origin: Origin = DEFAULT_ORIGIN,
        log_steps: bool = True,
    ) -> None:
        self._handle = LoggerHandle(sinks, logger, origin)
        self.log_steps = log_steps
        self.steps = 0

    def log_metrics(self, trainer: Any, metrics: dict[str, Any]) -> None:
        if trainer.run_config.is_world_process_zero:
            values = numeric(metrics)
            if values:
                self._handle.logger.scalars(values, trainer.run_history.current_epoch)

    def on_train_step_end(self, trainer: Any, batch: Any, batch_output: dict[str, Any], **kwargs: Any) -> None:
        if self.log_steps and trainer.run_config.is_world_process_zero and "loss" in batch_output:
            epoch = trainer.run_history.current_epoch
            event_logger = self._handle.logger
            saved, event_logger.context = event_logger.context, Context(epoch=epoch)
            event_logger.scalar("train_loss_step", batch_output["loss"].detach().item(), self.steps)
            event_logger.context = saved
            self.steps += 1

    def on_training_run_end(self, trainer: Any, **kwargs: Any) -> None:
        if trainer.run_config.is_world_process_zero:
            self._handle.close()
