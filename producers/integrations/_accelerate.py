"""MetricBusTracker: an Accelerate tracker that logs from every process into the job's host.

Accelerate runs `Accelerator.init_trackers` and `Accelerator.log` on the main process only, so
its trackers see one process's values: the others' are hidden, or reduced on the training path
(`accelerator.reduce`, an `all_reduce`) before being logged. This tracker exists on every
process (`main_process_only = False`): each process logs its own values with its rank, every
rank's logger ships to the job's one sink host on its machine, and the host's `bus.RankReducer`
writes the job's series (the mean, or each name's declared reduction) with no collective on the
training path.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from bus import Hparams, InvalidConfig, Origin, RankReduce, RankReduction, Sink, declare_reductions

from .._logger import MetricLogger
from ._common import LoggerHandle, flatten, numeric

try:
    from accelerate.tracking import GeneralTracker
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("MetricBusTracker needs accelerate: pip install 'metricbus[transformers]'") from exc

__all__ = ["MetricBusTracker"]


class MetricBusTracker(GeneralTracker):  # type: ignore[misc]
    """`Accelerator(log_with=MetricBusTracker(sinks=[...]))`: Accelerate's tracker API over metricbus.

    On every process (`main_process_only = False`): `log(values, step)` publishes this process's
    numeric values at `step` (None: one past the last step this tracker logged) with its rank,
    so under a launcher (torchrun, `accelerate launch`) the job's host reduces them over the
    ranks: `reduce` maps metric names or glob patterns to a reduction ("mean", "sum", "min",
    "max", "std", "count", "none"), declared to the host in this rank's stream before a name's
    first value; names it does not match reduce as the logger's `ranks=` says (the mean).

    Accelerate adds its trackers to `accelerator.trackers` on the main process only (its
    `init_trackers` is main-process-only), so on the others `accelerator.get_tracker("metricbus")`
    returns a blank tracker that logs nothing. `register(accelerator)` adds this one there too:
    then `accelerator.get_tracker("metricbus").log(...)` logs on every process, and
    `accelerator.end_training()` finishes it on every process. `accelerator.log(...)` still runs
    on the main process only: its values are rank 0's own (see docs/jobs.md).

    `store_init_configuration(config)` (Accelerate calls it on the main process from
    `init_trackers(..., config=...)`) publishes the config as one `Hparams` event of the job's
    run (the origin without its rank). `finish()` closes a logger built here (a passed one is
    only flushed); logging after it opens a fresh one over the same sinks.
    """

    name = "metricbus"
    requires_logging_directory = False
    main_process_only = False

    def __init__(
        self,
        sinks: Iterable[Sink] = (),
        *,
        logger: MetricLogger | None = None,
        origin: Origin | None = None,
        reduce: Mapping[str, RankReduction] | None = None,
    ) -> None:
        super().__init__()
        self._handle = LoggerHandle(sinks, logger, origin)
        self._reduce = _checked(reduce or {})
        self._ranked = False
        self._seen: set[str] = set()  # names whose reduction this logger has declared (or has none)
        self._next_step = 0

    @property
    def tracker(self) -> MetricLogger:
        """The MetricLogger behind this tracker (built on first use): `get_tracker(..., unwrap=True)`."""
        return self._logger()

    def _logger(self) -> MetricLogger:
        """The logger, with this process's rank stamped on the origin once it is built."""
        logger = self._handle.logger
        if not self._ranked:
            base = self._handle.origin
            if base.rank is None and logger.job is not None:
                self._handle.origin = msgspec.structs.replace(base, rank=logger.job.rank)
            self._ranked = True
        return logger

    def start(self) -> None:
        """Accelerate's `init_trackers` (and `register`) start the tracker: join the job's host now,
        so the host knows this rank before its first value."""
        self._logger()

    def register(self, accelerator: Any) -> MetricBusTracker:
        """Make this tracker one of `accelerator.trackers` on every process, after (or before)
        `accelerator.init_trackers(...)`, which adds it on the main process only. On the main
        process (and without a launcher) this does nothing: `init_trackers` adds it there."""
        if accelerator.is_main_process or any(t is self for t in accelerator.trackers):
            return self
        accelerator.trackers.append(self)
        self.start()
        return self

    def store_init_configuration(self, values: dict[str, Any]) -> None:
        """The run's configuration, flattened, as the job's hyperparameters (not one rank's)."""
        logger = self._logger()
        origin = msgspec.structs.replace(self._handle.origin, rank=None, node="")
        logger.publish(Hparams(flatten(values), origin=origin, context=logger.context))

    def log(self, values: dict[str, Any], step: int | None = None, **kwargs: Any) -> None:
        """This process's numeric values at `step`; strings and other non-numbers are left out."""
        if step is None:
            step = self._next_step
        self._next_step = step + 1
        numbers = numeric(values)
        if not numbers:
            return
        logger = self._logger()
        new = {name: self._reduce.named(name) for name in numbers if name not in self._seen}
        if new:
            self._seen.update(new)
            declared = {name: how for name, how in new.items() if how is not None}
            if declared and self._handle.origin.rank is not None:  # a rank's values: a reducer reads this
                logger.publish(declare_reductions(declared, origin=self._handle.origin))
        self._handle.scalars(numbers, step)

    def finish(self) -> None:
        """Everything logged is written; a logger built here is closed (`end_training` calls this)."""
        self._handle.close()
        self._ranked = False
        self._seen = set()


def _checked(reduce: Mapping[str, RankReduction]) -> RankReduce:
    """`reduce` as the table a `RankReduce` keeps (`named` looks a name up in it), every reduction
    checked (InvalidConfig names the one at fault)."""
    if not isinstance(reduce, Mapping):
        raise InvalidConfig(f"reduce must map metric names to reductions, got {type(reduce).__name__}")
    return RankReduce(world_size=1, metrics=dict(reduce))
