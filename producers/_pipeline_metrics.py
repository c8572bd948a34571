"""PipelineMetrics: the pipeline's own health, published into its sinks beside the curves.

Nobody plots their logger's lag; yet a sink that fell behind, dropped events or went down is
what explains a hole in a curve. This producer reads `stats()` every `every` seconds and
publishes, per sink, one series each:

    metricbus/<sink>/queue           events published but not yet written (queued + in flight)
    metricbus/<sink>/lag_s           seconds since the oldest event it holds was logged (0: none)
    metricbus/<sink>/dropped         events it dropped so far, every reason together
    metricbus/<sink>/spooled_bytes   bytes of its events waiting in its spool on disk
    metricbus/<sink>/down            1 while the sink is down or has failed, else 0

`<sink>` is the sink's label (`sink_label`): its kind and the last part of where it writes,
with every character outside `A-Z a-z 0-9 _ . -` made `_`, so that a sink name's ':' and '/'
never split or break a metric name in TensorBoard, W&B, MLflow or CSV:

    csv:runs/exp1/metrics.csv        -> csv_metrics.csv
    tensorboard:runs/exp1/tb         -> tensorboard_tb
    wandb:my-project                 -> wandb_my-project
    fast (a name given to add_sink)  -> fast

Two sinks whose labels would be the same get their whole name sanitized instead
(csv_runs_exp1_metrics.csv), and a number after that if still the same; a label once given
stays the sink's for the run (`labels`).

All series of one sample are one Metrics event at step = the sample's number (0, 1, ...) and
the sample's wall time, of `origin` (default: the default origin; `attach(logger)` takes the
logger's), as SystemSampler does: plot them against wall time (TensorBoard's "Relative" or
"Wall" axis) to line them up with the curves. A sample is taken every `every` seconds while the
bus is open; none is taken at close, when the producer is cancelled before the sinks drain.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Protocol

import anyio

from bus import DEFAULT_ORIGIN, Event, InvalidConfig, Metrics, Origin, SinkState, SinkStats

if TYPE_CHECKING:
    from ._logger import MetricLogger

__all__ = ["SERIES", "PipelineMetrics", "StatsBus", "name_part", "sink_label"]

#: The series published per sink, in order.
SERIES = ("queue", "lag_s", "dropped", "spooled_bytes", "down")

_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]+")
_KIND = re.compile(r"([A-Za-z][A-Za-z0-9_]*):(.*)", re.DOTALL)
_MAX_LABEL = 100
_NOT_WRITING = (SinkState.DOWN, SinkState.FAILED)


class StatsBus(Protocol):
    """What PipelineMetrics needs of a bus: a MetricBus, or a MetricLogger's `bus`."""

    async def publish(self, event: Event) -> None: ...

    def stats(self) -> Mapping[str, SinkStats]: ...


def sink_label(name: str) -> str:
    """A sink name made into one part of a metric name: its kind and the last part of where it
    writes ('csv:runs/exp1/metrics.csv' -> 'csv_metrics.csv'); see the module docstring."""
    match = _KIND.fullmatch(name)
    if match is None:
        return name_part(name)
    kind, where = match.groups()
    tail = where.rstrip("/").rsplit("/", 1)[-1]
    return name_part(f"{kind}_{tail}") if name_part(tail) else name_part(kind)


def name_part(text: str) -> str:
    """`text` as one part of a metric name: every run of characters outside A-Z a-z 0-9 _ . - made
    one "_", no "_" at either end, at most 100 characters (may be empty)."""
    return _UNSAFE.sub("_", text).strip("_")[:_MAX_LABEL]


class PipelineMetrics:
    """A producer (`bus.add_producer(PipelineMetrics(every=5.0))`, `log.add_producer(...)`) that
    publishes the series of the module docstring every `every` seconds, on the bus's own task, so
    the training thread pays nothing. `prefix` replaces "metricbus". `extra`: a function called at
    each sample whose values are published too, under the prefix (`metricbus aggregate` adds the
    health of every producer it reads this way)."""

    def __init__(
        self,
        every: float = 5.0,
        *,
        origin: Origin = DEFAULT_ORIGIN,
        prefix: str = "metricbus",
        extra: Callable[[], Mapping[str, float]] | None = None,
    ) -> None:
        if isinstance(every, bool) or not isinstance(every, int | float) or not every > 0:
            raise InvalidConfig(f"every must be a positive number of seconds, got {every!r}")
        if type(origin) is not Origin:
            raise InvalidConfig(f"origin must be an Origin, got {type(origin).__name__}")
        if not isinstance(prefix, str) or not prefix or name_part(prefix) != prefix:
            raise InvalidConfig(f"prefix must be a non-empty name of A-Z a-z 0-9 _ . -, got {prefix!r}")
        self.every = float(every)
        self.origin = origin
        self.prefix = prefix
        self.extra = extra
        self.labels: dict[str, str] = {}  # sink name -> its label in the series names, once given
        self.samples = 0  # published so far

    @classmethod
    def attach(cls, logger: MetricLogger, every: float = 5.0) -> PipelineMetrics:
        """Start one on `logger`'s bus that tags its samples with the logger's origin (a rank's
        pipeline beside that rank's curves)."""
        metrics = cls(every, origin=logger.origin)
        logger.add_producer(metrics)
        return metrics

    async def __call__(self, bus: StatsBus) -> None:
        while True:
            await anyio.sleep(self.every)
            await bus.publish(self.sample(bus.stats()))
            self.samples += 1

    def sample(self, stats: Mapping[str, SinkStats]) -> Metrics:
        """The event of one sample of `stats`, at step `samples`."""
        return Metrics(self.values(stats), self.samples, origin=self.origin)

    def values(self, stats: Mapping[str, SinkStats]) -> dict[str, float]:
        """Every series' value now, by its full name."""
        values: dict[str, float] = {}
        for name, s in stats.items():
            base = f"{self.prefix}/{self.label(name)}/"
            values[base + "queue"] = float(s.queued + s.in_flight)
            values[base + "lag_s"] = float(s.lag)
            values[base + "dropped"] = float(s.dropped_total)
            values[base + "spooled_bytes"] = float(s.spooled_bytes)
            values[base + "down"] = 1.0 if s.state in _NOT_WRITING else 0.0
        if self.extra is not None:
            values.update({f"{self.prefix}/{key}": float(value) for key, value in self.extra().items()})
        return values

    def label(self, name: str) -> str:
        """The label of the sink `name` (given at its first sample, then kept)."""
        label = self.labels.get(name)
        if label is None:
            taken = set(self.labels.values())
            label = next(c for c in _candidates(name) if c not in taken)
            self.labels[name] = label
        return label


def _candidates(name: str) -> Iterator[str]:
    yield sink_label(name) or "sink"
    whole = name_part(name) or "sink"
    yield whole
    n = 2
    while True:
        yield f"{whole}-{n}"
        n += 1
