"""MetricBusLogger: a PyTorch Lightning logger that publishes to metricbus."""

from __future__ import annotations

import inspect
import re
import warnings
from argparse import Namespace
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from bus import Origin, RankReduction, Sink, declare_reductions

from .._logger import MetricLogger
from ._common import LoggerHandle

try:
    import torch
    from lightning.pytorch import LightningModule, Trainer
    from lightning.pytorch.loggers import Logger
    from lightning.pytorch.utilities import rank_zero_only
    from torchmetrics import Metric
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("MetricBusLogger needs Lightning: pip install 'metricbus[lightning]'") from exc

__all__ = ["MetricBusLogger"]

# Lightning's reduce_fx (a name, any case, or the torch function) as a RankReducer's reduction;
# Lightning accepts no other (`_Metadata._parse_reduce_fx`).
_BY_NAME: dict[str, RankReduction] = {"mean": "mean", "avg": "mean", "sum": "sum", "max": "max", "min": "min"}
_BY_FUNCTION: dict[Any, RankReduction] = {torch.mean: "mean", torch.sum: "sum", torch.max: "max", torch.min: "min"}
_SUFFIX = re.compile(r"/dataloader_idx_[0-9]+$")
SYNCED: RankReduction = "max"
"""The reduction declared for a value Lightning synced itself: it is the same on every rank."""


def _reduction(reduce_fx: object) -> RankReduction | None:
    if isinstance(reduce_fx, str):
        return _BY_NAME.get(reduce_fx.lower())
    return _BY_FUNCTION.get(reduce_fx)


def _base_names(key: str) -> tuple[str, ...]:
    """The `self.log` names a logged key may come from: Lightning adds `_step` / `_epoch` when a
    value is logged both ways, and `/dataloader_idx_N` with several evaluation dataloaders."""
    key = _SUFFIX.sub("", key)
    for suffix in ("_step", "_epoch"):
        if key.endswith(suffix):
            return key, key[: -len(suffix)]
    return (key,)


class _HostSync:
    """Stands in for one LightningModule's `log` during one stage: a value logged with
    `sync_dist=True` and a mean/sum/max/min `reduce_fx` is logged with `sync_dist=False` (no
    `all_reduce`: each rank keeps its own value) and its reduction noted for the reducer, unless
    a callback or scheduler monitors it (or the user said `keep_sync`): then Lightning syncs it
    as always, every rank holds the synced value, and it is noted as already reduced."""

    def __init__(self, module: LightningModule, keep: frozenset[str]) -> None:
        self.module = module
        self.original: Callable[..., None] = module.log
        self.signature = inspect.signature(self.original)
        self.keep = keep
        self.reductions: dict[str, RankReduction] = {}  # self.log name -> how the reducer reduces it
        self.quiet: set[str] = set()

    def __call__(self, name: str, value: Any, *args: Any, **kwargs: Any) -> None:
        if args:  # options given by position: name them, to read and change sync_dist
            bound = self.signature.bind(name, value, *args, **kwargs)
            kwargs = dict(bound.arguments)
            name, value = kwargs.pop("name"), kwargs.pop("value")
        if kwargs.get("sync_dist") and self._moves(name, value, kwargs):
            kwargs["sync_dist"] = False
        self.original(name, value, **kwargs)

    def _moves(self, name: str, value: Any, options: dict[str, Any]) -> bool:
        """True when this value's sync moves to the reducer (noting its reduction either way)."""
        how = _reduction(options.get("reduce_fx", "mean"))
        if options.get("sync_dist_group") is not None or options.get("rank_zero_only") or isinstance(value, Metric):
            return False  # a subgroup, rank zero alone, a torchmetrics Metric (it syncs itself): as Lightning does
        if how is None or name in self.keep:
            self.reductions[name] = SYNCED
            return False
        self.reductions[name] = how
        if name not in self.quiet:  # Lightning warns of an epoch value logged without sync_dist
            self.quiet.add(name)
            warnings.filterwarnings("ignore", message=re.escape(f"It is recommended to use `self.log({name!r}, ..."))
        return True

    def reduction(self, key: str) -> RankReduction | None:
        """How a key Lightning logged reduces over the ranks (None: not logged with sync_dist)."""
        for name in _base_names(key):
            how = self.reductions.get(name)
            if how is not None:
                return how
        return None

    def remove(self) -> None:
        if self.module.__dict__.get("log") is self:
            del self.module.log


def _monitored(trainer: Trainer) -> set[str]:
    """The names Lightning's callbacks (ModelCheckpoint, EarlyStopping, any with a `monitor`)
    and LR schedulers (ReduceLROnPlateau's `monitor`) read from `trainer.callback_metrics`."""
    callbacks = trainer.callbacks  # type: ignore[attr-defined]  # a property Lightning's stubs miss
    names = {cb.monitor for cb in callbacks if isinstance(getattr(cb, "monitor", None), str)}
    names |= {cfg.monitor for cfg in trainer.lr_scheduler_configs if isinstance(cfg.monitor, str)}
    return {base for name in names for base in _base_names(name)}


class MetricBusLogger(Logger):  # type: ignore[misc]
    """`Trainer(logger=MetricBusLogger(sinks=[...]))`: Lightning's `log_metrics` become `Metrics`
    events, `log_hyperparams` one `Hparams` event; every stage's end (`finalize`) flushes.

    all_ranks=False (default) publishes from rank zero only, like Lightning's own loggers;
    all_ranks=True publishes from every rank, each with `Origin(rank=...)` (site and node kept
    from `origin`), so the TensorBoard and W&B sinks show one run per rank.

    reduce_ranks=True (implies all_ranks) moves `self.log(..., sync_dist=True)` off the training
    path: under a distributed strategy each rank logs its own value (no `all_reduce`) and
    declares, in its stream, the value's reduce_fx (mean/sum/max/min), so the `bus.RankReducer`
    where the ranks meet (`metricbus aggregate` with `[ranks]`) writes the job's series with the
    values Lightning would have logged. Names that a callback or LR scheduler monitors
    (`monitor=`), and those in `keep_sync`, keep Lightning's sync: `trainer.callback_metrics`
    holds their synced value on every rank, as always. For the other names it holds each rank's
    own value (as with `sync_dist=False`). Lightning hands the logger its module at each stage's
    start (`log_graph`), where this is set up; `finalize` puts the module's `log` back.
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
        reduce_ranks: bool = False,
        keep_sync: Iterable[str] = (),
    ) -> None:
        super().__init__()
        self._handle = LoggerHandle(sinks, logger, origin)
        self._name = name
        self._version = version
        self.all_ranks = all_ranks or reduce_ranks
        self.reduce_ranks = reduce_ranks
        self.keep_sync = frozenset(keep_sync)
        self._ranked = False
        self._sync: _HostSync | None = None
        self._declared: dict[str, RankReduction] = {}  # what this stage's logger has declared

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

    def log_graph(self, model: torch.nn.Module, input_array: Any = None) -> None:
        """Lightning calls this on every rank at each stage's start, with its LightningModule:
        with reduce_ranks, under more than one process, the module's `log` is taken over."""
        if not (self.reduce_ranks and isinstance(model, LightningModule)):
            return
        self._release()
        trainer = model.trainer
        if trainer.world_size > 1:
            self._sync = _HostSync(model, self.keep_sync | _monitored(trainer))
            model.log = self._sync  # type: ignore[method-assign]

    def _release(self) -> None:
        if self._sync is not None:
            self._sync.remove()
            self._sync = None

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if self._publishes():
            self._set_rank()
            if self._sync is not None:
                self._declare(metrics)
            self._handle.scalars(metrics, 0 if step is None else step)

    def _declare(self, metrics: Mapping[str, float]) -> None:
        """Tell the reducer how the keys first seen here reduce (before their values go)."""
        assert self._sync is not None
        new: dict[str, RankReduction] = {}
        for key in metrics:
            how = self._sync.reduction(key) or ("max" if key == "epoch" else None)  # Lightning's epoch: every rank's
            if how is not None and self._declared.get(key) != how:
                new[key] = how
        if new:
            self._declared.update(new)
            self._handle.logger.publish(declare_reductions(new, origin=self._handle.origin))

    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        if self._publishes():
            self._set_rank()
            self._handle.hparams(vars(params) if isinstance(params, Namespace) else params)

    def finalize(self, status: str) -> None:
        """Called at the end of every fit/validate/test: everything logged so far is written and
        a logger built here is closed; a later stage opens a fresh one over the same sinks."""
        self._release()
        self._declared = {}  # the next stage's logger declares again (an aggregator restarted since forgot)
        if self._publishes():
            self._handle.close()
