"""MetricBusCallback: a Hugging Face `Trainer` callback that publishes to metricbus."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bus import Origin, Sink

from .._logger import MetricLogger
from ._common import LoggerHandle, numeric

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
    on_train_end, and the end of an evaluate() outside training: flushes and closes the logger
    this callback built (a passed one is only flushed); a later stage opens a fresh one.
    Only the world process zero publishes, as with the Trainer's own integrations.
    """

    def __init__(
        self, sinks: Iterable[Sink] = (), *, logger: MetricLogger | None = None, origin: Origin | None = None
    ) -> None:
        self._handle = LoggerHandle(sinks, logger, origin)
        self._training = False

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        self._training = True
        if not state.is_world_process_zero:
            return
        params: dict[str, Any] = dict(args.to_sanitized_dict())
        config = getattr(model, "config", None)
        if config is not None:
            params["model"] = config.to_dict()
        self._handle.hparams(params)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if state.is_world_process_zero and logs:
            values = numeric(logs)
            if values:
                self._handle.scalars(values, state.global_step)

    def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        if self._training:
            self._handle.flush()
        else:  # a `trainer.evaluate()` of its own is a whole stage, like a training run
            self._handle.close()

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._training = False
        if state.is_world_process_zero:
            self._handle.close()
