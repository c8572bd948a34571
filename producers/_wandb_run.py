"""Run: the W&B run API (log, config, summary, define_metric, finish) over a MetricLogger.

`log` keeps wandb's history semantics, as wandb-core's handler applies them: a row is built at
the current step until it is committed (`log` without `step` and `commit`, `commit=True`, a
`step=` higher than the current one, or `finish`); a `step=` higher than the current one first
commits the pending row and moves to it; a `step=` lower than the current one is ignored with a
warning (wandb's own words), and so is its data. Each committed row is published as events at
its step: numbers as one Metrics, strings as Text, histograms and images as their events.
`run.step` is that current step, as wandb's core reports it.

Where the events go: every sink of the logger (a plan file's, `METRICBUS_SINKS`', `sinks=`'s)
and a W&B run through `sinks.WandbSink` (offline unless the script or WANDB_MODE says online;
none with mode="disabled"), which logs each row at the same `_step`. The W&B sink is added at
the first publish, so `define_metric` calls before the first row reach its run.
"""

from __future__ import annotations

import logging
import operator
import os
import secrets
import string
import sys
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from bus import (
    BusClosed,
    BusStateError,
    Event,
    Hparams,
    InvalidConfig,
    InvalidEvent,
    Metrics,
    RunConfig,
    Sink,
    Text,
)

from ._logger import MetricLogger
from ._wandb_config import Config, Summary
from ._wandb_media import Audio, Histogram, Image, is_wandb_media

__all__ = [
    "Run",
    "RunOptions",
    "current_run",
    "finish_active_runs",
    "latest_run",
    "open_logger",
    "resolve_reinit",
    "start_run",
]

log = logging.getLogger("metricbus")

Mode = Literal["online", "offline", "disabled"]
#: Row keys wandb sets itself: a value logged under one of them would be replaced or dropped.
RESERVED = frozenset({"_step", "_runtime", "_timestamp"})
_MODES = {"online": "online", "offline": "offline", "disabled": "disabled", "dryrun": "offline", "run": "online"}
_SUMMARY_OPS = {"min", "max", "mean", "last", "first", "copy", "none"}
#: What a W&B script may call that metricbus does not do, and what to do instead.
UNSUPPORTED = {
    "watch": "log histograms of the parameters and gradients you want with run.log({...: Histogram(...)})",
    "unwatch": "nothing to undo: watch is not supported",
    "save": "keep files with your own code; metricbus writes metrics, not files",
    "restore": "read files with your own code; metricbus writes metrics, not files",
    "log_artifact": "log artifacts with wandb itself",
    "use_artifact": "use artifacts with wandb itself",
    "log_model": "log models with wandb itself",
    "link_model": "link models with wandb itself",
    "Artifact": "use wandb.Artifact with wandb itself",
    "alert": "send alerts with wandb itself",
    "mark_preempting": "nothing to mark: metricbus drains every sink on SIGTERM",
    "plot": "log an image of the plot (producers.wandb.Image(figure))",
    "log_code": "keep code with your own tools",
}


# ---- the run's options, as wandb.init takes them ----


@dataclass
class RunOptions:
    """What `init` was given that the W&B run needs, resolved against the environment."""

    project: str
    mode: Mode
    id: str
    name: str | None = None
    group: str | None = None
    job_type: str | None = None
    tags: tuple[str, ...] = ()
    notes: str | None = None
    entity: str | None = None
    dir: str | None = None
    allow_val_change: bool = False
    wandb_kwargs: dict[str, Any] = field(default_factory=dict)  # passed on to wandb.init as they are


def resolve_mode(mode: str | None) -> Mode:
    """The run's mode: `mode`, else WANDB_MODE (WANDB_DISABLED=true: disabled), else offline."""
    if mode is None and os.environ.get("WANDB_DISABLED", "").lower() in ("true", "1", "yes"):
        return "disabled"
    chosen = mode if mode is not None else os.environ.get("WANDB_MODE") or "offline"
    if chosen not in _MODES:
        raise InvalidConfig(
            f"mode={chosen!r}: expected one of 'online', 'offline', 'disabled' ('shared' is not supported)"
        )
    return _MODES[chosen]  # type: ignore[return-value]


Reinit = Literal["default", "return_previous", "finish_previous", "create_new"]
_REINITS = ("default", "return_previous", "finish_previous", "create_new")


def resolve_reinit(reinit: object, settings: object) -> Reinit:
    """What a second `init` does while a run is active, as wandb 0.31 decides it: `reinit=`,
    else `settings.reinit` where the script set it, else WANDB_REINIT, else "default"; then
    "default" is "finish_previous" in a notebook or IPython (wandb's convenience there) and
    "return_previous" in a script. True and False are wandb's deprecated spellings of
    "finish_previous" and "return_previous"."""
    if reinit is None and settings is not None and "reinit" in (getattr(settings, "model_fields_set", None) or ()):
        reinit = settings.reinit  # type: ignore[attr-defined]
    if reinit is None:
        reinit = os.environ.get("WANDB_REINIT") or "default"
    if isinstance(reinit, str) and reinit.lower() in ("true", "false"):
        reinit = reinit.lower() == "true"
    if isinstance(reinit, bool):
        reinit = "finish_previous" if reinit else "return_previous"
    if reinit not in _REINITS:
        raise InvalidConfig(f"reinit={reinit!r}: expected one of {', '.join(map(repr, _REINITS))}, True or False")
    if reinit == "default":
        return "finish_previous" if _in_notebook() else "return_previous"
    return reinit  # type: ignore[return-value]


def _in_notebook() -> bool:
    """True in Jupyter or IPython (wandb's `in_notebook`): an IPython shell is running."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        return ipython.get_ipython() is not None  # type: ignore[no-any-return]
    except Exception:  # IPython half imported, or its shell broken: a script, as wandb decides then
        return False


_ID_CHARS = string.ascii_lowercase + string.digits


def new_run_id() -> str:
    """An id as wandb makes them: 8 lowercase letters and digits, drawn from the operating
    system's source (`secrets`), never the global `random` module: logging must not move a seeded
    script's random stream, and two scripts seeded alike must not get one id (online, the second
    would resume the first)."""
    return "".join(secrets.choice(_ID_CHARS) for _ in range(8))


# ---- the run ----


class Run:
    """A W&B-style run publishing to a MetricLogger. Made by `producers.wandb.init`."""

    def __init__(
        self,
        options: RunOptions,
        logger: MetricLogger,
        *,
        owned: bool,
        wandb_sink: Callable[[list[dict[str, Any]]], Sink] | None,
    ) -> None:
        self._options = options
        self._logger = logger
        self._owned = owned
        self._make_wandb_sink = wandb_sink
        self._definitions: list[dict[str, Any]] = []
        self._started = False
        self._finished = False
        self._step = 0  # wandb-core's current history step: the step of the pending row
        self._numbers: dict[str, float] = {}  # the pending row: numbers
        self._others: dict[str, tuple[Event, ...]] = {}  # ... and text, histograms, images (a list of
        # media: several), as events at its step
        self._row_values: dict[str, Any] = {}  # ... as the script gave them, for the summary
        self._touched = False  # a log call reached the pending row (even an empty one)
        self._hparams: dict[str, Any] = {}  # the first value of each config key, for Hparams
        self._hparams_sent = 0
        self.config = Config(self, options.allow_val_change)
        self.summary = Summary(self)

    # ---- what wandb's Run has ----

    @property
    def id(self) -> str:
        return self._options.id

    @property
    def name(self) -> str | None:
        return self._options.name

    @property
    def project(self) -> str:
        return self._options.project

    @property
    def entity(self) -> str | None:
        return self._options.entity

    @property
    def group(self) -> str | None:
        return self._options.group

    @property
    def job_type(self) -> str | None:
        return self._options.job_type

    @property
    def tags(self) -> tuple[str, ...]:
        return self._options.tags

    @property
    def notes(self) -> str | None:
        return self._options.notes

    @property
    def dir(self) -> str:
        return self._options.dir or os.getcwd()

    @property
    def mode(self) -> Mode:
        return self._options.mode

    @property
    def offline(self) -> bool:
        return self._options.mode == "offline"

    @property
    def disabled(self) -> bool:
        return self._options.mode == "disabled"

    @property
    def url(self) -> None:
        """None: an offline run has no URL until `wandb sync` uploads it."""
        return None

    @property
    def step(self) -> int:
        """wandb's `run.step`: the step of the row being built, which the next `log` without
        `step=` writes to (wandb asks its core for it; this run is its own core)."""
        return self._step

    @property
    def logger(self) -> MetricLogger:
        """The MetricLogger under this run: add sinks or producers to it, read its stats."""
        return self._logger

    def log(self, data: Mapping[str, Any], step: int | None = None, commit: bool | None = None) -> None:
        """Add `data` to the history, with wandb's step and commit rules (see the module)."""
        self._check_open("log")
        if not isinstance(data, Mapping):
            raise InvalidEvent("data", data, "must be a dict of names to values")
        if step is not None:
            step = _as_step(step)
        target = self._step if step is None or step <= self._step else step
        metrics, others, originals = _row(data, target)
        if step is not None:
            if step > self._step:
                self._commit_row()
                self._step = step
            elif step < self._step:
                log.warning(
                    "Tried to log to step %d that is less than the current step %d. Steps must be monotonically "
                    "increasing, so this data will be ignored. See https://wandb.me/define-metric to log data out "
                    "of order.",
                    step,
                    self._step,
                )
                return
        flush = commit if commit is not None else step is None
        if flush and not self._touched:  # the usual call, a whole row at once: published as it is
            self._publish_row(metrics, others, originals)
            self._step += 1
            return
        numbers = metrics.values if metrics is not None else {}
        for name in numbers:
            self._others.pop(name, None)
        for name in others:
            self._numbers.pop(name, None)
        self._numbers.update(numbers)
        self._others.update(others)
        self._row_values.update(originals)
        self._touched = True
        if flush:
            self._commit_row()
            self._step += 1

    def define_metric(
        self,
        name: str,
        step_metric: str | None = None,
        step_sync: bool | None = None,
        hidden: bool | None = None,
        summary: str | None = None,
        overwrite: bool | None = None,
    ) -> None:
        """Declare an x-axis (`step_metric`), a summary (min, max, mean, last, first, none) or
        hiding, as wandb does; must come before the first row is committed (its W&B run starts
        then, with these definitions)."""
        self._check_open("define_metric")
        for arg, value, kind in (
            ("name", name, str),
            ("step_metric", step_metric, str),
            ("step_sync", step_sync, bool),
            ("hidden", hidden, bool),
            ("summary", summary, str),
            ("overwrite", overwrite, bool),
        ):
            if value is not None and not isinstance(value, kind):
                raise InvalidEvent(arg, value, f"must be a {kind.__name__}")
        if not name or "*" in name[:-1]:
            raise InvalidEvent("name", name, "must be a metric name, with at most a '*' at its end")
        for op in (summary or "").lower().split(",") if summary else ():
            if op not in _SUMMARY_OPS:
                raise InvalidEvent("summary", summary, f"{op!r} is not one of {sorted(_SUMMARY_OPS)}")
        if self._started and self._make_wandb_sink is not None:
            raise BusStateError(
                "define_metric after the first row: its W&B run has started; call define_metric before logging"
            )
        given = {"step_metric": step_metric, "step_sync": step_sync, "hidden": hidden, "summary": summary}
        given["overwrite"] = overwrite
        self._definitions.append({"name": name, **{k: v for k, v in given.items() if v is not None}})

    def finish(self, exit_code: int | None = None, quiet: bool | None = None) -> None:
        """Commit the pending row and close the run: with a logger of its own, every sink is
        drained and closed (`DeliveryError` if something was lost); with `logger=`, flushed."""
        if self._finished:
            return
        try:
            self._commit_row()
            self._start()
            self._send_hparams()
        finally:
            self._finished = True
            _forget(self)
            if self._owned:
                self._logger.close()
            else:
                self._logger.flush()

    def __enter__(self) -> Run:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.finish(exit_code=1 if exc is not None else 0)

    def __getattr__(self, name: str) -> Any:
        if name in UNSUPPORTED:
            raise AttributeError(f"run.{name} is not supported by metricbus: {UNSUPPORTED[name]}")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __repr__(self) -> str:
        return f"<Run {self.id} project={self.project!r} mode={self.mode} step={self.step}>"

    # ---- publishing ----

    def _check_open(self, call: str) -> None:
        if self._finished:
            raise BusClosed(f"run {self.id} is finished: the call to {call} cannot be made; start a run with init()")

    def _commit_row(self) -> None:
        """Publish the pending row at the current step, if a log call reached it."""
        if not self._touched:
            return
        metrics = Metrics(self._numbers, self._step) if self._numbers else None
        self._publish_row(metrics, self._others, self._row_values)
        self._numbers, self._others, self._row_values, self._touched = {}, {}, {}, False

    def _publish_row(
        self, metrics: Metrics | None, others: dict[str, tuple[Event, ...]], originals: dict[str, Any]
    ) -> None:
        """A committed row's events: numbers as one Metrics, the rest as their own events."""
        events: list[Event] = [event for group in others.values() for event in group]
        if metrics is not None or not events:  # an empty log({}) is a row of its own, as in wandb
            events.insert(0, metrics if metrics is not None else Metrics({}, self._step))
        self._publish(events)
        if metrics is not None:
            self.summary._rows(metrics.values)
        if originals:
            self.summary._rows(originals)

    def _publish(self, events: Iterable[Event]) -> None:
        self._start()
        publish = self._logger.publish
        for event in events:
            publish(event)

    def _start(self) -> None:
        """At the first publish: add the W&B sink (with the definitions made so far), then the
        config as it is now."""
        if self._started:
            return
        self._started = True
        if self._make_wandb_sink is not None:
            sink = self._make_wandb_sink(self._definitions)
            # Its config comes as RunConfig, exact; the flat Hparams copy is for the other sinks.
            sink.accepts = tuple(kind for kind in sink.accepts or () if kind is not Hparams)  # type: ignore[misc]
            self._logger.add_sink(sink, rate="none", name=f"wandb-run:{self.id}")
        if self.config._items or self._make_wandb_sink is not None:  # even empty: the W&B run
            # starts with it, as wandb's does at init, so a run that logs nothing still has its file
            self._logger.publish(RunConfig(dict(self.config._items), self._step))
        self._send_hparams()

    def _config_changed(self, changes: dict[str, Any]) -> None:
        for key, value in changes.items():
            self._hparams.setdefault(key, value)
        if self._started:
            self._logger.publish(RunConfig(changes, self._step))

    def _send_hparams(self) -> None:
        """The config's first values as one flat Hparams (TensorBoard's HPARAMS tab, MLflow's
        params), when keys were added since the last one: never a changed value (MLflow keeps a
        param's first value and refuses another)."""
        if len(self._hparams) > self._hparams_sent and self._started:
            self._hparams_sent = len(self._hparams)
            self._logger.publish(Hparams(_flat(self._hparams), step=self._step))


def _as_step(step: Any) -> int:
    """A step as wandb takes it: an int (numpy and torch integers too), >= 0 and within int64."""
    try:
        value = operator.index(step)
    except TypeError:
        raise InvalidEvent("step", step, f"must be an int, not {type(step).__name__}") from None
    if not 0 <= value < 2**63:
        raise InvalidEvent("step", step, "must be >= 0 and within int64")
    return value


def _row(data: Mapping[str, Any], step: int) -> tuple[Metrics | None, dict[str, tuple[Event, ...]], dict[str, Any]]:
    """One log call's values, checked here at the call: its numbers as one Metrics event at
    `step`, its other values as events at `step`, and those other values as given."""
    numbers, others, originals = _values(data, step)
    return (Metrics(numbers, step) if numbers else None), others, originals


def _values(
    data: Mapping[str, Any], step: int, prefix: str = ""
) -> tuple[dict[str, Any], dict[str, tuple[Event, ...]], dict[str, Any]]:
    """A log call's numbers (as given), other values as events, and those as given. A nested
    dict's keys become 'parent.child' (as W&B shows them)."""
    numbers: dict[str, Any] = {}
    others: dict[str, tuple[Event, ...]] = {}
    originals: dict[str, Any] = {}
    for key, value in data.items():
        if type(key) is not str:
            raise InvalidEvent("data key", key, "must be a str")
        name = prefix + key
        if name in RESERVED:
            raise InvalidEvent(name, value, "is a name wandb sets itself; log your own x-axis and define_metric it")
        kind = type(value)
        if kind is float or kind is int:
            numbers[name] = value
            continue
        if kind is str:
            others[name] = (Text(name, value, step),)
        elif isinstance(value, (Audio, Histogram, Image)):
            others[name] = (value.event(name, step),)
        elif _media_list(value):
            others[name] = _sequence(name, value, step)
        elif isinstance(value, Mapping):
            nested = _values(value, step, f"{name}.")
            numbers.update(nested[0])
            others.update(nested[1])
            originals.update(nested[2])
            continue
        elif value is None or isinstance(value, bool) or kind.__name__ == "bool_":
            raise InvalidEvent(name, value, "is not a number: log a number (int(flag) for a flag) or a str")
        elif is_wandb_media(value):
            raise InvalidEvent(name, value, f"is wandb's own {kind.__name__}: use producers.wandb.{kind.__name__}")
        elif _many(value):
            raise InvalidEvent(name, value, "is many values: log Histogram(values), or one name per value")
        else:
            numbers[name] = value  # numpy scalars, one-element arrays and tensors: Metrics reads them
            continue
        originals[name] = value
    return numbers, others, originals


def _media_list(value: Any) -> bool:
    """True for a list or tuple of producers.wandb media (what wandb logs as a sequence)."""
    media = (Audio, Histogram, Image)
    return isinstance(value, (list, tuple)) and bool(value) and all(isinstance(v, media) for v in value)


def _sequence(name: str, value: Sequence[Any], step: int) -> tuple[Event, ...]:
    """A list of images (or of sounds) as one event per item, named `name/0`, `name/1`, ... for
    the sinks that write each on its own, each marked as part of the sequence `name`, which the
    W&B sink logs as one list, as wandb does (its `images/separated` value and files)."""
    kind = type(value[0])
    if kind is Histogram or any(type(v) is not kind for v in value):
        raise InvalidEvent(
            name, value, "is a list of histograms or of mixed media: log a list of Images or Audios, or a name each"
        )
    return tuple(item.event(f"{name}/{i}", step, sequence=name) for i, item in enumerate(value))


def _many(value: Any) -> bool:
    """True for a list, a tuple, or an array or tensor of more than one element."""
    if isinstance(value, (list, tuple)):
        return True
    size = getattr(value, "size", None)  # numpy: an int; torch: a method (numel counts)
    if callable(size):
        numel = getattr(value, "numel", None)
        return callable(numel) and numel() != 1
    return isinstance(size, int) and size != 1


def _flat(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config dicts as 'parent.child' keys, for Hparams (whose values are scalars)."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


# ---- the current run, and the exit hook that finishes it ----

_runs: list[Run] = []  # every run not finished yet, oldest first (wandb's active runs)
_global: list[Run] = []  # the module-level run (wandb.run), if any: at most one


def current_run() -> Run | None:
    """The module-level run (`wandb.run`), if one is active."""
    return _global[0] if _global else None


def latest_run() -> Run | None:
    """The most recently started run not finished yet, module-level or not."""
    return _runs[-1] if _runs else None


def start_run(run: Run, *, make_global: bool = True) -> Run:
    """Count `run` as active (the exit hook will finish it if the script does not) and, unless
    `make_global` is False (wandb's reinit="create_new"), make it the module-level run."""
    _register_exit_hook()
    _runs.append(run)
    if make_global:
        _global[:] = [run]
    return run


def finish_active_runs() -> None:
    """Finish every active run, oldest first (wandb's reinit="finish_previous")."""
    for run in list(_runs):
        run.finish()


def _forget(run: Run) -> None:
    if run in _runs:
        _runs.remove(run)
    if run in _global:
        _global.clear()


def _finish_at_exit() -> None:
    """Finish every run the script left open, as wandb does at exit: the pending row is
    committed and the sinks drained. Runs before the loggers' own exit hook (hooks run last
    registered, first)."""
    for run in list(_runs):
        try:
            run.finish()
        except Exception as exc:
            log.error("metricbus: at exit, finishing W&B run %s failed: %s", run.id, exc)


_hooked: list[bool] = []


def _register_exit_hook() -> None:
    if _hooked:
        return
    _hooked.append(True)
    try:
        threading._register_atexit(_finish_at_exit)  # type: ignore[attr-defined]
    except (AttributeError, RuntimeError):  # another interpreter, or already shutting down
        import atexit

        atexit.register(_finish_at_exit)


def open_logger(
    sinks: Sequence[Sink], plan: str | Path | None, logger: MetricLogger | None
) -> tuple[MetricLogger, bool]:
    """The run's logger and whether the run owns it: `logger=` as given; else one built from a
    plan file (`plan=` or METRICBUS_PLAN), the sinks named in METRICBUS_SINKS
    ("tensorboard:runs/tb,csv:runs/m.csv", as `metricbus replay --to` takes them) and `sinks=`."""
    if logger is not None:
        if sinks or plan is not None:
            raise InvalidConfig("pass logger=..., or sinks=/plan= for a logger of the run's own, not both")
        return logger, False
    plan = plan if plan is not None else os.environ.get("METRICBUS_PLAN") or None
    if plan is not None:
        from ._plan import load_plan

        built = load_plan(plan).logger()
    else:
        built = MetricLogger()
    try:
        specs = [s.strip() for s in os.environ.get("METRICBUS_SINKS", "").split(",") if s.strip()]
        if specs:
            from ._replay import sink_from_spec

            for spec in specs:
                built.add_sink(sink_from_spec(spec))
        for sink in sinks:
            built.add_sink(sink)
    except BaseException:
        built.close()
        raise
    return built, True
