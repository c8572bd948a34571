"""MetricBusCallback: a Hugging Face `Trainer` callback that publishes to metricbus."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

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

    Under a multi-process launch (torchrun, `accelerate launch`: the logger is a rank of a job),
    every process joins the job's one sink host for each stage, and the world process zero
    publishes as the job itself (its origin without rank and node): the Trainer hands its
    callbacks values it has already reduced over the processes (its own `all_gather` of the
    loss, the gathered evaluation), so they are the job's series as they are, written once, in
    the job's run. No callback sees a process's own loss; see docs/jobs.md.
    """

    def __init__(
        self, sinks: Iterable[Sink] = (), *, logger: MetricLogger | None = None, origin: Origin | None = None
    ) -> None:
        self._handle = LoggerHandle(sinks, logger, origin)
        self._training = False

    def _logger(self) -> MetricLogger:
        """The logger (built now if needed); a rank of a job publishes as the job."""
        logger = self._handle.logger
        origin = self._handle.origin
        if logger.job is not None and (origin.rank is not None or origin.node):
            self._handle.origin = msgspec.structs.replace(origin, rank=None, node="")
        return logger

    def _join(self, state: Any) -> None:
        """Every process of a job joins its host at a stage's start, so the host knows every
        rank and drains as soon as the last one leaves (not a linger later)."""
        if state.is_world_process_zero or self._handle.in_job():
            self._logger()

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        self._training = True
        self._join(state)
        if not state.is_world_process_zero:
            return
        params: dict[str, Any] = dict(args.to_sanitized_dict())
        config = getattr(model, "config", None)
        if config is not None:
            params["model"] = config.to_dict()
        self._logger()
        self._handle.hparams(params)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if state.is_world_process_zero and logs:
            values = numeric(logs)
            if values:
                self._logger()
                self._handle.scalars(values, state.global_step)

    def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._training:
            if state.is_world_process_zero:
                self._handle.flush()
        else:  # a `trainer.evaluate()` of its own is a whole stage, like a training run
            self._join(state)
            self._handle.close()

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._training = False
        self._handle.close()
