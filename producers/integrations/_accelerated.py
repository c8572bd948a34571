"""MetricBusLogMetricsCallback: pytorch_accelerated's LogMetricsCallback, publishing to metricbus.

pytorch_accelerated's docs make a platform logger by subclassing `LogMetricsCallback` and
overriding `log_metrics(trainer, metrics)` (their AzureML/MLflow example). This is that subclass
for every metricbus sink at once: `callbacks=(*DEFAULT_CALLBACKS, MetricBusLogMetricsCallback(sinks=[...]))`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from bus import Context, Origin, Sink

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
    """Publishes a pytorch_accelerated run: its run history, its batch losses, its run config.

    Training run start: `trainer.run_config` as hyperparameters (the seed's `mlflow.set_tags`).
    Epoch ends: the latest value of every run-history metric (losses and any metric a callback
    added with `run_history.update_metric`), at step = the epoch, as one `Metrics` event.
    Step ends (`log_steps=True`): the batch loss as `train_loss_step` at a running step count,
    with `Context(epoch=...)`; the Trainer read that loss to the CPU just before this hook, so
    the device queue is empty and the extra read costs microseconds, not a stall.
    Run ends (training or evaluation): flush, and close a logger built here; the next run opens a
    fresh one over the same sinks. An evaluation run restarts the run history at epoch 1, so its
    metrics are at step 1, as pytorch_accelerated numbers them.
    Only the world process zero publishes, as in the seed's examples.
    """

    def __init__(
        self,
        sinks: Iterable[Sink] = (),
        *,
        logger: MetricLogger | None = None,
        origin: Origin | None = None,
        log_steps: bool = True,
    ) -> None:
        self._handle = LoggerHandle(sinks, logger, origin)
        self.log_steps = log_steps
        self.steps = 0

    def on_training_run_start(self, trainer: Any, **kwargs: Any) -> None:
        if trainer.run_config.is_world_process_zero:
            config = trainer.run_config  # a dataclass; its to_dict() fails without an eval set
            self._handle.hparams({f.name: getattr(config, f.name) for f in dataclasses.fields(config)})

    def log_metrics(self, trainer: Any, metrics: dict[str, Any]) -> None:
        """The one method the seed's platform loggers override: called at each epoch's end."""
        if trainer.run_config.is_world_process_zero:
            values = numeric(metrics)
            if values:
                self._handle.scalars(values, trainer.run_history.current_epoch)

    def on_train_step_end(self, trainer: Any, batch: Any, batch_output: dict[str, Any], **kwargs: Any) -> None:
        if not (self.log_steps and trainer.run_config.is_world_process_zero and "loss" in batch_output):
            return
        loss = float(batch_output["loss"].detach().mean())
        self._handle.scalar("train_loss_step", loss, self.steps, Context(epoch=trainer.run_history.current_epoch))
        self.steps += 1

    def on_training_run_end(self, trainer: Any, **kwargs: Any) -> None:
        if trainer.run_config.is_world_process_zero:
            self._handle.close()

    def on_evaluation_run_end(self, trainer: Any, **kwargs: Any) -> None:
        if trainer.run_config.is_world_process_zero:
            self._handle.close()
