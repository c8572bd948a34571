"""MetricBusCallback: a Hugging Face `Trainer` callback that publishes to metricbus."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bus import DEFAULT_ORIGIN, Origin, Sink

from .._logger import MetricLogger
from ._common import LoggerHandle, flatten, numeric

try:
    from transformers import TrainerCallback
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("MetricBusCallback needs transformers: pip install 'metricbus[transformers]'") from exc

__all__ = ["MetricBusCallback"]


class MetricBusCallback(TrainerCallback):  # type: ignore[misc]
    """`Trainer(..., callbacks=[MetricBusCallback(sinks=[...])])`.

    on_train_begin: the TrainingArguments and the model config as hyperparameters.
    on_log: every numeric entry of the Trainer's logs (train and eval) at `state.global_step`.
    on_evaluate: flushes, so evaluation results are on disk when evaluate() returns.
    on_train_end: flushes and closes the logger this callback built (a passed one is only flushed).
    Only the world process zero publishes, as with the Trainer's own integrations.
    """

    def __init__(
        self, sinks: Iterable[Sink] = (), *, logger: MetricLogger | None = None, origin: Origin = DEFAULT_ORIGIN
    ) -> None:
        self._handle = LoggerHandle(sinks, logger, origin)

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        params = flatten(args.to_sanitized_dict())
        config = getattr(model, "config", None)
        if config is not None:
            params.update(flatten(config.to_dict(), "model/"))
        self._handle.logger.hparams(params)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if state.is_world_process_zero and logs:
            values = numeric(logs)
            if values:
                self._handle.logger.scalars(values, state.global_step)

    def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            self._handle.logger.flush()

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            self._handle.close()
