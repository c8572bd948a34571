"""MetricBusLogger: a PyTorch Lightning logger that publishes to metricbus."""

from __future__ import annotations

from argparse import Namespace
from collections.abc import Iterable, Mapping
from typing import Any

from bus import DEFAULT_ORIGIN, Origin, Sink

from .._logger import MetricLogger
from ._common import LoggerHandle, flatten

try:
    from lightning.pytorch.loggers import Logger
    from lightning.pytorch.utilities import rank_zero_only
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("MetricBusLogger needs Lightning: pip install 'metricbus[lightning]'") from exc

__all__ = ["MetricBusLogger"]


class MetricBusLogger(Logger):  # type: ignore[misc]
    """`Trainer(logger=MetricBusLogger(sinks=[...]))`: Lightning's `log_metrics` and
    `log_hyperparams` become metricbus events; the bus is flushed and closed when fit ends.

    all_ranks=False (default) publishes from rank zero only, like Lightning's own loggers;
    all_ranks=True publishes from every rank, each with origin `Origin(rank=...)`.
    """

    def __init__(
        self,
        sinks: Iterable[Sink] = (),
        *,
        logger: MetricLogger | None = None,
        name: str = "metricbus",
        version: int | str = 0,
        all_ranks: bool = False,
        origin: Origin = DEFAULT_ORIGIN,
    ) -> None:
        super().__init__()
        self._handle = LoggerHandle(sinks, logger, origin)
        self._name = name
        self._version = version
        self.all_ranks = all_ranks

    @property
    def name(self) -> str:
        return self._name

    @property
    def version(self) -> int | str:
        return self._version

    @staticmethod
    def _rank() -> int:
        return int(getattr(rank_zero_only, "rank", 0))  # set by Lightning on each process

    @property
    def experiment(self) -> MetricLogger:
        """The MetricLogger behind this Lightning logger (created on first use)."""
        if self.all_ranks and self._handle._logger is None:
            self._handle.origin = Origin(
                site=self._handle.origin.site, node=self._handle.origin.node, rank=self._rank()
            )
        return self._handle.logger

    def _publishes(self) -> bool:
        return self.all_ranks or self._rank() == 0

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if self._publishes():
            self.experiment.scalars(dict(metrics), 0 if step is None else step)

    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        if self._publishes():
            params = vars(params) if isinstance(params, Namespace) else dict(params)
            self.experiment.hparams(flatten(params))

    def finalize(self, status: str) -> None:
        if self._publishes():
            self._handle.close()
