"""The W&B module API over every sink: change one import line and a W&B script runs unchanged.

    import producers.wandb as wandb      # was: import wandb

    run = wandb.init(project="exp1", config={"lr": 0.1}, group="g", job_type="train", tags=["a"])
    wandb.config.update({"batch_size": 32})
    for step in range(100):
        wandb.log({"loss": 1 / (step + 1)})
    run.summary["best"] = 0.01
    wandb.finish()

The run is the same offline W&B run real wandb writes (history rows at the same `_step`, config,
summary, group, job type, tags), written by `sinks.WandbSink` off the training thread, and the
same rows go to every other sink named by `init(sinks=...)`, a plan file (`init(plan=...)` or
METRICBUS_PLAN) or METRICBUS_SINKS: TensorBoard, CSV, MLflow, JSONL. Offline unless the script or
WANDB_MODE says online; with mode="disabled" only the other sinks are written. Every row is kept
(no rate limit) and every exit path drains every sink. Anchor: Trackio (`import trackio as
wandb`), which writes W&B-shaped runs into a store of its own.

`Histogram`, `Image` and `Audio` are mapped to events; `Video`, `Table` and W&B's other media
raise `InvalidEvent` naming what to log instead. See docs/drop-ins.md, "W&B scripts, unchanged".
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from bus import BusStateError, InvalidConfig, Sink

from ._logger import MetricLogger
from ._wandb_config import Config, Summary, config_dict
from ._wandb_media import REFUSED, Audio, Histogram, Image
from ._wandb_run import (
    UNSUPPORTED,
    Run,
    RunOptions,
    current_run,
    finish_active_runs,
    latest_run,
    new_run_id,
    open_logger,
    resolve_mode,
    resolve_reinit,
    start_run,
)

if TYPE_CHECKING:
    run: Run | None
    config: Config
    summary: Summary
    Video: type
    Table: type
    Html: type
    Object3D: type
    Molecule: type
    Plotly: type
    Graph: type
    ImageMask: type
    BoundingBoxes2D: type
    Settings: Any

__all__ = [
    "Audio",
    "BoundingBoxes2D",
    "Config",
    "Graph",
    "Histogram",
    "Html",
    "Image",
    "ImageMask",
    "Molecule",
    "Object3D",
    "Plotly",
    "Run",
    "Settings",
    "Summary",
    "Table",
    "Video",
    "config",
    "define_metric",
    "finish",
    "init",
    "log",
    "login",
    "require",
    "run",
    "summary",
]

Reinit = bool | Literal["default", "return_previous", "finish_previous", "create_new"] | None


def init(
    entity: str | None = None,
    project: str | None = None,
    dir: str | Path | None = None,
    id: str | None = None,
    name: str | None = None,
    notes: str | None = None,
    tags: Sequence[str] | None = None,
    config: Any = None,
    config_exclude_keys: Sequence[str] | None = None,
    config_include_keys: Sequence[str] | None = None,
    allow_val_change: bool | None = None,
    group: str | None = None,
    job_type: str | None = None,
    mode: str | None = None,
    force: bool | None = None,
    reinit: Reinit = None,
    resume: bool | str | None = None,
    resume_from: str | None = None,
    fork_from: str | None = None,
    save_code: bool | None = None,
    tensorboard: bool | None = None,
    sync_tensorboard: bool | None = None,
    monitor_gym: bool | None = None,
    settings: Any = None,
    anonymous: str | None = None,
    *,
    sinks: Sequence[Sink] = (),
    plan: str | Path | None = None,
    logger: MetricLogger | None = None,
) -> Run:
    """Start a run, as `wandb.init` takes its arguments (and reads WANDB_* variables); returns it.

    Also: `sinks=[...]` (more sinks for the rows), `plan="plan.toml"` (a plan file's logger
    and sinks; METRICBUS_PLAN names one too), `logger=` an existing MetricLogger (only flushed
    at finish). A run still active is handled as wandb 0.31 does (`reinit=`, `settings.reinit`,
    WANDB_REINIT): by default a script gets that run back (its arguments ignored) and a notebook
    finishes it and starts a new one; "finish_previous" finishes every active run first,
    "return_previous" returns the latest, "create_new" starts another that does not become the
    module-level run (`wandb.run`, `wandb.log`).
    """
    if tensorboard or sync_tensorboard:
        raise InvalidConfig(
            "sync_tensorboard is not supported: metricbus writes TensorBoard itself; "
            "pass sinks=[TensorBoardSink(logdir)] (or use producers.SummaryWriter(logger=run.logger))"
        )
    if monitor_gym:
        raise InvalidConfig("monitor_gym is not supported by metricbus: log the episodes' videos with wandb itself")
    policy = resolve_reinit(reinit, settings)
    previous = latest_run()
    if previous is not None:
        if policy == "finish_previous":
            finish_active_runs()
        elif policy == "return_previous":
            if resume == "must":
                raise BusStateError(
                    "Cannot resume a run while another run is active: finish it with run.finish(), "
                    "or pass reinit='create_new'"
                )
            return previous
    options = RunOptions(
        project=project or os.environ.get("WANDB_PROJECT") or "uncategorized",
        mode=resolve_mode(mode),
        id=id or os.environ.get("WANDB_RUN_ID") or new_run_id(),
        name=name or os.environ.get("WANDB_NAME") or None,
        group=group or os.environ.get("WANDB_RUN_GROUP") or None,
        job_type=job_type or os.environ.get("WANDB_JOB_TYPE") or None,
        tags=tuple(tags) if tags else tuple(t for t in os.environ.get("WANDB_TAGS", "").split(",") if t),
        notes=notes or os.environ.get("WANDB_NOTES") or None,
        entity=entity or os.environ.get("WANDB_ENTITY") or None,
        dir=None if dir is None and not os.environ.get("WANDB_DIR") else str(dir or os.environ["WANDB_DIR"]),
        allow_val_change=bool(allow_val_change),
    )
    passed = {
        "tags": list(options.tags) or None,
        "notes": options.notes,
        "entity": options.entity,
        "resume": resume,
        "resume_from": resume_from,
        "fork_from": fork_from,
        "save_code": save_code,
        "anonymous": anonymous,
        "force": force,
        "settings": settings,
    }
    options.wandb_kwargs = {k: v for k, v in passed.items() if v is not None}
    params = config_dict(config, config_include_keys, config_exclude_keys)  # checked before anything starts
    built, owned = open_logger(sinks, plan, logger)
    try:
        run = Run(options, built, owned=owned, wandb_sink=None if options.mode == "disabled" else _wandb_sink(options))
        run.config.update(params, allow_val_change=True)
    except BaseException:
        if owned:
            built.close()
        raise
    return start_run(run, make_global=policy != "create_new")


def _wandb_sink(options: RunOptions) -> Any:
    """A maker of the run's WandbSink, given the define_metric calls made before its first row."""

    def make(definitions: list[dict[str, Any]]) -> Sink:
        from sinks import WandbSink

        return WandbSink(
            project=options.project,
            mode=options.mode,  # type: ignore[arg-type]  # "disabled" has no sink
            group=options.group or "",
            job_type=options.job_type,
            dir=options.dir,
            run_name=options.name or "",  # no name: an empty display name, as wandb leaves it
            run_id=options.id,
            wandb_step=True,
            define_metrics=definitions,
            **options.wandb_kwargs,
        )

    return make


def log(data: dict[str, Any], step: int | None = None, commit: bool | None = None) -> None:
    """`run.log` of the current run (see `Run.log`)."""
    _active("log").log(data, step=step, commit=commit)


def define_metric(
    name: str,
    step_metric: str | None = None,
    step_sync: bool | None = None,
    hidden: bool | None = None,
    summary: str | None = None,
    overwrite: bool | None = None,
) -> None:
    """`run.define_metric` of the current run."""
    _active("define_metric").define_metric(name, step_metric, step_sync, hidden, summary, overwrite)


def finish(exit_code: int | None = None, quiet: bool | None = None) -> None:
    """Finish the current run, if there is one (see `Run.finish`)."""
    active = current_run()
    if active is not None:
        active.finish(exit_code, quiet)


def login(*args: Any, **kwargs: Any) -> Any:
    """wandb.login itself: it stores the API key an online run's sink will use."""
    import wandb

    return wandb.login(*args, **kwargs)


def require(requirement: Any = None, experiment: Any = None) -> None:
    """wandb.require itself: its features ("service", "core") are no-ops in wandb 0.31, and
    an unknown one raises wandb's own error, as in a W&B script."""
    import wandb

    wandb.require(requirement, experiment)


def _active(call: str) -> Run:
    active = current_run()
    if active is None:
        raise BusStateError(f"You must call init() before {call}()")
    return active


class _PreInit:
    """`config` / `summary` before init: any use raises, as wandb's pre-init objects do."""

    def __init__(self, name: str) -> None:
        object.__setattr__(self, "_name", name)

    def __getattr__(self, key: str) -> Any:
        raise BusStateError(f"You must call init() before {self._name}.{key}")

    def __setattr__(self, key: str, value: Any) -> None:
        raise BusStateError(f"You must call init() before {self._name}.{key}")

    __getitem__ = __getattr__
    __setitem__ = __setattr__


_PRE_INIT = {"config": _PreInit("config"), "summary": _PreInit("summary")}


def __getattr__(name: str) -> Any:
    """`run`, `config` and `summary` of the current run; W&B's other media types (refused when
    made); wandb.Settings; a clear AttributeError for what metricbus does not do."""
    if name == "run":
        return current_run()
    if name in _PRE_INIT:
        active = current_run()
        return _PRE_INIT[name] if active is None else getattr(active, name)
    if name in REFUSED:
        return REFUSED[name]
    if name == "Settings":
        import wandb

        return wandb.Settings
    if name in UNSUPPORTED:
        raise AttributeError(f"wandb.{name} is not supported by metricbus: {UNSUPPORTED[name]}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
