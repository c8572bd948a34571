"""WandbSink: one wandb run per origin, all in one group; one `run.log` per (origin, step).

wandb silently ignores a `step=` lower than the run's current step. This sink never passes
`step=`: it logs our step as the metric "metricbus/step" and declares it the x-axis of every
metric (`define_metric`), so out-of-order and repeated steps are all kept and plotted where they
belong. wandb can hang in `init` and `finish`; both are bounded by timeouts, run in a thread
that is abandoned if it does not come back. Offline mode needs no account and no network.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import anyio

from bus import Event, Histogram, Hparams, Metrics, Scalar, Sink, Text

__all__ = ["STEP_KEY", "WandbSink"]

log = logging.getLogger("metricbus")

STEP_KEY = "metricbus/step"
Mode = Literal["offline", "online", "disabled"]


class WandbSink(Sink):
    """Logs every event type to Weights & Biases.

    One run per origin (named by `origin.label`), all in `group` (default: a generated name
    shared by this sink's runs), the NVIDIA FLARE pattern for sites and ranks. Values of one
    (origin, step) in a batch are merged into one `run.log` call (each call costs ~400 us of
    Python). Histogram -> `wandb.Histogram`, Text -> a string value, Hparams -> the run config
    (and its metrics logged at its step). Runs in a worker process by default.
    """

    isolation: ClassVar[Literal["none", "process"]] = "process"

    def __init__(
        self,
        project: str = "metricbus",
        *,
        mode: Mode = "offline",
        group: str | None = None,
        job_type: str | None = None,
        config: dict[str, Any] | None = None,
        dir: str | Path | None = None,
        init_timeout: float = 90.0,
        finish_timeout: float = 90.0,
        **init_kwargs: Any,
    ) -> None:
        self.project = project
        self.mode = mode
        self.group = group or f"metricbus-{uuid.uuid4().hex[:8]}"
        self.job_type = job_type
        self.config = dict(config or {})
        self.dir = None if dir is None else str(dir)
        self.init_timeout = init_timeout
        self.finish_timeout = finish_timeout
        self.init_kwargs = init_kwargs
        self._runs: dict[str, Any] = {}

    @property
    def name(self) -> str:
        return f"wandb:{self.project}"

    async def open(self) -> None:
        try:
            import wandb  # noqa: F401
        except ImportError as exc:  # pragma: no cover - wandb is a dependency
            raise ImportError("WandbSink needs wandb: pip install wandb") from exc

    async def write_batch(self, events: Sequence[Event]) -> int:
        rows, rejected = _rows(events)
        for label in dict.fromkeys(label for (label, _step), _values in rows):
            if label not in self._runs:
                self._runs[label] = await self._init_run(label)
        config = [(e.origin.label, e.params) for e in events if isinstance(e, Hparams)]
        for label, _params in config:
            if label not in self._runs:
                self._runs[label] = await self._init_run(label)
        await anyio.to_thread.run_sync(self._log, rows, config, abandon_on_cancel=True)
        return rejected

    async def close(self) -> None:
        runs, self._runs = self._runs, {}
        stuck = []
        for label, run in runs.items():
            with anyio.move_on_after(self.finish_timeout):
                await anyio.to_thread.run_sync(run.finish, abandon_on_cancel=True)
                continue
            stuck.append(label)
        if stuck:
            raise TimeoutError(f"wandb finish did not return within {self.finish_timeout}s for runs {stuck}")

    async def _init_run(self, label: str) -> Any:
        import wandb

        settings = wandb.Settings(silent=True, console="off", x_disable_stats=True, disable_git=True)

        def init() -> Any:
            run = wandb.init(
                project=self.project,
                mode=self.mode,
                group=self.group,
                job_type=self.job_type,
                name=label,
                config=self.config,
                dir=self.dir,
                reinit="create_new",  # one run per origin, side by side in this process
                settings=settings,
                **self.init_kwargs,
            )
            run.define_metric(STEP_KEY)
            run.define_metric("*", step_metric=STEP_KEY)
            return run

        with anyio.fail_after(self.init_timeout):
            return await anyio.to_thread.run_sync(init, abandon_on_cancel=True)

    def _log(self, rows: list[tuple[tuple[str, int], dict[str, Any]]], config: list[tuple[str, Any]]) -> None:
        import wandb

        for label, params in config:
            self._runs[label].config.update(params, allow_val_change=True)
        for (label, step), values in rows:
            row = {k: _wandb_value(wandb, v) for k, v in values.items()}
            row[STEP_KEY] = step
            self._runs[label].log(row)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_runs": {}}


def _rows(events: Sequence[Event]) -> tuple[list[tuple[tuple[str, int], dict[str, Any]]], int]:
    """Values merged per (origin label, step), in order of first appearance; and how many events
    were refused (a metric named like our step key would overwrite the step)."""
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    rejected = 0
    for event in events:
        values: dict[str, Any]
        if isinstance(event, Scalar):
            values = {event.name: event.value}
        elif isinstance(event, Metrics):
            values = event.values
        elif isinstance(event, Histogram):
            values = {event.name: event}
        elif isinstance(event, Text):
            values = {event.name: event.text}
        elif isinstance(event, Hparams):
            values = event.metrics
            if not values:
                continue
        else:
            continue
        if STEP_KEY in values:
            log.warning("wandb sink: metric name %r is reserved for the step axis; event dropped", STEP_KEY)
            rejected += 1
            continue
        rows.setdefault((event.origin.label, event.step), {}).update(values)
    return list(rows.items()), rejected


def _wandb_value(wandb: Any, value: Any) -> Any:
    if isinstance(value, Histogram):
        if value.values is not None:
            return wandb.Histogram(sequence=[v for v in value.values if v - v == 0])  # finite only
        limits, counts = list(value.bucket_limits or ()), list(value.bucket_counts or ())
        edges = [limits[0] - (limits[1] - limits[0] if len(limits) > 1 else 1.0), *limits]
        return wandb.Histogram(np_histogram=(counts, edges))
    return value
