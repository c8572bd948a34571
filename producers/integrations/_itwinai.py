"""ItwinaiLogger: itwinai's unified logger shape over every configured sink.

`log(item, identifier, kind="metric", step=None, batch_idx=None)` and
`save_hyperparameters(params)`, honouring `log_freq` as itwinai defines it: with an int N, a
call with a batch_idx is logged when batch_idx % N == 0 (batches 0, N, 2N, ...); with "batch",
every call; with "epoch", only calls without a batch_idx. A call without a batch_idx is always
logged.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from bus import Histogram, InvalidEvent, Origin, Scalar, Sink, Text

from .._frequency import LogFrequency
from .._logger import MetricLogger
from ._common import LoggerHandle

__all__ = ["ItwinaiLogger"]

Kind = Literal["metric", "text", "histogram"]


class ItwinaiLogger:
    """One object reaching every sink, with itwinai's `log` / `save_hyperparameters` API."""

    def __init__(
        self,
        sinks: Iterable[Sink] = (),
        *,
        logger: MetricLogger | None = None,
        log_freq: int | Literal["epoch", "batch"] | LogFrequency = "epoch",
        origin: Origin | None = None,
    ) -> None:
        self._handle = LoggerHandle(sinks, logger, origin)
        self.log_freq = LogFrequency.parse(log_freq)

    def should_log(self, batch_idx: int | None = None) -> bool:
        """itwinai's rule: a call without a batch_idx is always logged, one with it per log_freq."""
        return batch_idx is None or self.log_freq(batch_idx)

    def log(
        self,
        item: Any,
        identifier: str,
        kind: Kind = "metric",
        step: int | None = None,
        batch_idx: int | None = None,
    ) -> None:
        """Log `item` under `identifier`; the step is `step`, else `batch_idx`, else 0."""
        if not self.should_log(batch_idx):
            return
        at = step if step is not None else (batch_idx if batch_idx is not None else 0)
        origin = self._handle.origin
        if kind == "metric":
            event: Any = Scalar(identifier, item, at, origin=origin)
        elif kind == "text":
            event = Text(identifier, str(item), at, origin=origin)
        elif kind == "histogram":
            event = Histogram(identifier, at, values=item, origin=origin)
        else:
            raise InvalidEvent("kind", kind, "must be 'metric', 'text' or 'histogram'")
        self._handle.logger.publish(event)

    def save_hyperparameters(self, params: dict[str, Any]) -> None:
        """All of `params` as one Hparams event; nested dicts become 'a/b' keys."""
        self._handle.hparams(params)

    def create_logger_context(self, rank: int | None = None) -> None:
        """itwinai's start of a run. With a `rank`, this process's events carry `Origin(rank=...)`
        (one TensorBoard/W&B run per rank); call it before the first `log`."""
        if rank is not None:
            base = self._handle.origin
            self._handle.origin = Origin(site=base.site, node=base.node, rank=rank)

    def destroy_logger_context(self) -> None:
        """itwinai's name for the end of a run: flush, and close what this object started."""
        self._handle.close()

    def __enter__(self) -> ItwinaiLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy_logger_context()
