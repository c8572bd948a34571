"""MetricBusLogger: a PyTorch Lightning logger that publishes to metricbus."""

from __future__ import annotations

from argparse import Namespace
from collections.abc import Iterable, Mapping
from typing import Any

from bus import Origin, Sink

from .._logger import MetricLogger
from ._common import LoggerHandle

try:
    from lightning.pytorch.loggers import Logger
    from lightning.pytorch.utilities import rank_zero_only
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("MetricBusLogger needs Lightning: pip install 'metricbus[lightning]'") from exc

__all__ = ["MetricBusLogger"]


class MetricBusLogger(Logger):  # type: ignore[misc]
    """`Trainer(logger=MetricBusLogger(sinks=[...]))`: Lightning's `log_metrics` become `Metrics`
    events, `log_hyperparams` one `Hparams` event; every stage's end (`finalize`) flushes.

    all_ranks=False (default) publishes from rank zero only, like Lightning's own loggers;
    all_ranks=True publishes from every rank, each with `Origin(rank=...)` (site and node kept
    from `origin`), so the TensorBoard and W&B sinks show one run per rank.
    With `sinks=` the logger is built on first use in each process (so it survives DDP spawn)
    and closed by `finalize`; the next stage on the same Trainer (validate, test, a fit with a
    raised `fit_loop.max_epochs`) builds a fresh one over the same sinks, at Lightning's steps.
    With `logger=` the given MetricLogger is only flushed.
    """

    def __init__(
        self,
        sinks: Iterable[Sink] = (),
        *,
        logger: MetricLogger | None = None,
        name: str = "metricbus",
        version: int | str = 0,
        all_ranks: bool = False,
        origin: Origin | None = None,
    ) -> None:
        super().__init__()
        self._handle = LoggerHandle(sinks, logger, origin)
        self._name = name
        self._version = version
        self.all_ranks = all_ranks
        self._ranked = False

    @property
    def name(self) -> str:
        return self._name

    @property
    def version(self) -> int | str:
        return self._version

    @staticmethod
    def _rank() -> int:
        return int(getattr(rank_zero_only, "rank", 0))  # set by Lightning in each process

    @property
    def experiment(self) -> MetricLogger:
        """The MetricLogger behind this Lightning logger (built on first use)."""
        self._set_rank()
        return self._handle.logger

    def _set_rank(self) -> None:
        """With all_ranks, stamp this process's rank on the origin; Lightning knows the rank only
        once the strategy has set the process up, so this waits for the first event."""
        if self.all_ranks and not self._ranked:
            base = self._handle.origin
            self._handle.origin = Origin(site=base.site, node=base.node, rank=self._rank())
            self._ranked = True

    def _publishes(self) -> bool:
        return self.all_ranks or self._rank() == 0

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if self._publishes():
            self._set_rank()
            self._handle.scalars(metrics, 0 if step is None else step)

    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        if self._publishes():
            self._set_rank()
            self._handle.hparams(vars(params) if isinstance(params, Namespace) else params)

    def finalize(self, status: str) -> None:
        """Called at the end of every fit/validate/test: everything logged so far is written and
        a logger built here is closed; a later stage opens a fresh one over the same sinks."""
        if self._publishes():
            self._handle.close()
