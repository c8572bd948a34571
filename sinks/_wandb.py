"""WandbSink: one wandb run per origin, all in one group; one `run.log` per (origin, step).

wandb silently ignores a `step=` lower than the run's current step. This sink never passes
`step=`: it logs our step as the metric "metricbus/step" and declares it the x-axis of every
metric (`define_metric`), so out-of-order and repeated steps are all kept and plotted where they
belong. wandb can hang in `init` and `finish`; every wandb call runs on a daemon thread of the
sink's own, and init/finish are waited for with timeouts, so a hung wandb can hang neither the
bus's shutdown nor the process's exit. Offline mode needs no account and no network.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import queue
import re
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, wait
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar, get_args

import anyio

from bus import (
    DEFAULT_ORIGIN,
    Audio,
    Event,
    Histogram,
    Hparams,
    Image,
    InvalidConfig,
    Metrics,
    RateLimit,
    RunConfig,
    RunSummary,
    Scalar,
    Sink,
    Text,
    Video,
    metric_items,
)

from ._open_set import OpenSet
from ._wandb_media import wandb_audio, wandb_video

__all__ = ["MAX_OPEN_RUNS", "STEP_KEY", "WandbSink"]

log = logging.getLogger("metricbus")

T = TypeVar("T")
Mode = Literal["offline", "online", "disabled"]

# W&B refuses these in a project name (wandb.sdk.wandb_settings.Settings.validate_project), but only
# once the run starts, seconds later, in the sink host: checked here, at the call.
_PROJECT_CHARS = frozenset("/\\#?%:")
_PROJECT_LEN = 128


def _check_project(project: object) -> None:
    if not isinstance(project, str) or not project.strip():
        raise InvalidConfig(f"WandbSink: project must be a non-empty string, got {project!r}")
    bad = sorted(_PROJECT_CHARS & set(project))
    if bad or len(project) > _PROJECT_LEN:
        why = f"cannot contain {' '.join(bad)}" if bad else f"is longer than {_PROJECT_LEN} characters"
        raise InvalidConfig(f"WandbSink: project {project!r} {why} (W&B refuses it)")


Row = tuple[str, int, dict[str, Any]]  # origin label, step, values for one run.log call

STEP_KEY = "metricbus/step"
#: Names wandb overwrites with its own values without a word, and our step axis.
RESERVED = frozenset({STEP_KEY, "_step", "_runtime", "_timestamp"})
#: wandb.Histogram refuses more bins than this.
MAX_BINS = 512
#: Runs a sink keeps open by default. Each open run holds a file descriptor here and three in
#: wandb's service, and a resumed one costs a `wandb.init` (~80 ms offline): room for 64 origins
#: logging at once without resuming any.
MAX_OPEN_RUNS = 64
#: How long an anyio worker thread waits for a wandb call before checking in again; bounds how
#: long an abandoned wait can outlive its cancellation.
_WAIT_SLICE = 0.25


class WandbSink(Sink):
    """Logs every event type but ChartLayout (a TensorBoard layout; W&B has no equivalent, so it is
    not routed here) to Weights & Biases.

    One run per origin (named by `origin.label`), all in `group` (default: a generated name
    shared by this sink's runs), the NVIDIA FLARE pattern for sites and ranks. Values of one
    (origin, step) in a batch are merged into one `run.log` call (each call costs ~100-400 us of
    Python). Histogram -> `wandb.Histogram`, Image -> `wandb.Image` (made from the raw pixels on
    the sink's call thread, which writes its PNG), Text -> a string value, Hparams -> the run
    config (and its metrics logged at its step), RunConfig / RunSummary -> the run's config /
    summary, as they are. `init_kwargs` go to `wandb.init` (a `settings` given
    there replaces ours). Runs in a worker process by default.
    """

    isolation: ClassVar[Literal["none", "host", "process"]] = "process"
    # W&B's guidance is at most ~1,000 log calls a minute per run, and each call costs ~90 us of
    # CPU wherever it runs: measured, 3,000 steps of a ~1 ms loop took 1.35-1.59 s of CPU with a
    # row per step and 0.48-0.50 s at 10 rows/s. So W&B gets 10 rows/s per run by default, each
    # the mean of its window (the true curve); add_sink(rate="none") sends every step.
    rate: ClassVar[RateLimit | None] = RateLimit(per_second=10, reduce="mean")
    accepts = (Scalar, Metrics, Histogram, Text, Hparams, Image, Audio, Video, RunConfig, RunSummary)

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
        max_open_runs: int = MAX_OPEN_RUNS,
        run_name: str | None = None,
        run_id: str | None = None,
        wandb_step: bool = False,
        define_metrics: Sequence[Mapping[str, Any]] = (),
        **init_kwargs: Any,
    ) -> None:
        taken = {"name", "reinit", "id"} & init_kwargs.keys()
        if taken:
            raise TypeError(
                f"WandbSink sets {sorted(taken)} itself (one run per origin, named by its label; "
                "run_name and run_id name the default origin's run)"
            )
        _check_project(project)
        if mode not in get_args(Mode):
            raise InvalidConfig(f"WandbSink: mode must be one of {', '.join(get_args(Mode))}, got {mode!r}")
        self.project = project
        self.mode = mode
        # group="" asks for no group of ours (wandb's own default, WANDB_RUN_GROUP included)
        self.group = f"metricbus-{uuid.uuid4().hex[:8]}" if group is None else group
        self.run_name = run_name
        self.run_id = run_id
        # wandb_step: each event's step is wandb's own `_step` (run.log(step=...)), for a producer
        # whose steps only go up (producers.wandb); a step below its run's last is refused and
        # counted. Otherwise the step is the metric "metricbus/step", and every order is kept.
        self.wandb_step = wandb_step
        self.define_metrics = [dict(d) for d in define_metrics]  # run.define_metric(**d) after init
        self._last_steps: dict[str, int] = {}  # wandb_step: each run's highest step logged
        self.job_type = job_type
        self.config = dict(config or {})
        self.dir = None if dir is None else str(dir)
        self.init_timeout = init_timeout
        self.finish_timeout = finish_timeout
        self.init_kwargs = init_kwargs
        self._calls: _CallThread | None = None
        self._runs: OpenSet[str, Any] = OpenSet(max_open_runs, _finish)  # by label; used only on the call thread

    @property
    def output_dir(self) -> Path | None:
        return Path(self.dir or os.environ.get("WANDB_DIR") or ".") / "wandb"

    @property
    def name(self) -> str:
        return f"wandb:{self.project}"

    async def open(self) -> None:
        try:
            import wandb  # noqa: F401
        except ImportError as exc:
            raise ImportError("WandbSink needs wandb: pip install wandb") from exc
        self._calls = _CallThread()

    async def write_batch(self, events: Sequence[Event]) -> int:
        behind, last_steps = 0, self._last_steps
        if self.wandb_step:
            events, behind, last_steps = self._ahead(events)
        rows, config, rejected = _plan(events, empty_rows=self.wandb_step)
        calls = self._opened()
        labels = list(dict.fromkeys([label for label, _params in config] + [label for label, _step, _values in rows]))
        limit = self._runs.limit
        for chunk in (labels[i : i + limit] for i in range(0, len(labels), limit)):  # never more open than the limit
            keep = set(chunk)
            missing = [label for label in chunk if label not in self._runs]
            if missing:
                with anyio.move_on_after(self.init_timeout) as waited:
                    await calls.call(partial(self._start_runs, missing, keep), f"wandb.init of {missing}")
                if waited.cancelled_caught:
                    raise TimeoutError(f"wandb.init of {missing} did not return within {self.init_timeout}s")
            chunk_rows = [row for row in rows if row[0] in keep]
            chunk_config = [update for update in config if update[0] in keep]
            if chunk_rows or chunk_config:
                await calls.call(partial(self._log, chunk_rows, chunk_config), "run.log")
        self._last_steps = last_steps
        return rejected + behind

    def _ahead(self, events: Sequence[Event]) -> tuple[list[Event], int, dict[str, int]]:
        """wandb_step: the events of a batch but the rows wandb would drop without a word (a step
        below its run's last one), how many those were (a warning says so), and each run's last
        step once the batch is logged."""
        kept, behind, last = [], 0, dict(self._last_steps)
        for event in events:
            if _values(event) or isinstance(event, Metrics):
                label = event.origin.label
                if event.step < last.get(label, -1):
                    behind += 1
                    continue
                last[label] = event.step
            kept.append(event)
        if behind:
            log.warning("wandb sink: %d events refused for steps below their run's last step (wandb_step)", behind)
        return kept, behind, last

    async def close(self) -> None:
        calls, self._calls = self._calls, None
        if calls is None:
            return
        try:
            with anyio.move_on_after(self.finish_timeout) as waited:
                await calls.call(self._finish_runs, "run.finish")  # queued after any hung init: late runs too
        finally:
            calls.stop()
        if waited.cancelled_caught:
            message = (
                f"wandb did not finish within {self.finish_timeout}s, stuck in {calls.running};"
                f" runs left open: {list(self._runs)}"
            )
            log.warning("wandb sink: %s", message)
            raise TimeoutError(message)

    def _opened(self) -> _CallThread:
        if self._calls is None:
            raise RuntimeError("WandbSink used before open() or after close()")
        return self._calls

    # ---- on the call thread ----

    def _start_runs(self, labels: list[str], keep: set[str]) -> None:
        """Start or resume the runs of `labels`, finishing the least recently used others (never
        those in `keep`) to stay within the limit."""
        for label in labels:
            if label not in self._runs:  # a retry may find the run a late init created
                self._runs.make_room(keep)
                self._runs.add(label, self._init_run(label))

    def _init_run(self, label: str) -> Any:
        import wandb

        settings = wandb.Settings(silent=True, console="off", x_disable_stats=True, disable_git=True)
        main = label == DEFAULT_ORIGIN.label
        run = wandb.init(
            **{"settings": settings, "resume": "allow", **self.init_kwargs},
            project=self.project,
            mode=self.mode,
            group=self.group or None,
            job_type=self.job_type,
            name=self.run_name if main and self.run_name is not None else label,
            # The same id for the same (group, origin): a later stage of a framework (fit, then
            # test) reopens this sink and continues its runs instead of starting new ones.
            id=self.run_id if main and self.run_id is not None else _run_id(self.group, label),
            config=self.config,
            dir=self.dir,
            reinit="create_new",  # one run per origin, side by side in this process
        )
        if not self.wandb_step:
            run.define_metric(STEP_KEY)
            run.define_metric("*", step_metric=STEP_KEY)
        for definition in self.define_metrics:
            run.define_metric(**definition)
        return run

    def _log(self, rows: list[Row], config: list[tuple[str, dict[str, Any]]]) -> None:
        import wandb

        for label, params in config:
            self._runs[label].config.update(params, allow_val_change=True)
        for label, step, values in rows:
            if step == _SUMMARY:  # in its place among the rows: a later row's value replaces it
                self._runs[label].summary.update(values)
            elif self.wandb_step:
                self._runs[label].log({k: _media(wandb, v) for k, v in values.items()}, step=step)
            else:
                row = {k: _media(wandb, v) for k, v in values.items()}
                row[STEP_KEY] = step
                self._runs[label].log(row)

    def _finish_runs(self) -> None:
        self._runs.close_all()


class _CallThread:
    """Makes a sink's wandb calls one at a time, in order, on a daemon thread of its own.

    Daemon, unlike anyio's worker threads: a wandb call that never returns cannot keep the
    process from exiting. One thread, in order: a retried init waits behind a hung one instead of
    starting a second run, and finish comes after every init, so a late run is finished too.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any], str] | None] = queue.SimpleQueue()
        self.running = ""  # what the thread is doing now, for error messages
        threading.Thread(target=self._serve, name="metricbus-wandb", daemon=True).start()

    async def call(self, fn: Callable[[], T], what: str) -> T:
        """Run `fn` on the thread and return its result; cancelling stops the wait, not `fn`."""
        future: Future[T] = Future()
        self._jobs.put((fn, future, what))
        while not future.done():  # waits in slices: never pins an anyio worker to a hung call
            await anyio.to_thread.run_sync(partial(wait, [future], timeout=_WAIT_SLICE), abandon_on_cancel=True)
        return future.result()

    def stop(self) -> None:
        """End the thread once the calls queued so far have run."""
        self._jobs.put(None)

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, future, self.running = job
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed to the awaiting task, like concurrent.futures
                future.set_exception(exc)


def _finish(run: Any) -> None:
    run.finish()


def _run_id(group: str, label: str) -> str:
    """A wandb run id fixed by the group and the origin: readable (the group and label with
    characters other than letters, digits, '-', '_' as '-'), unique (a hash of both, as those
    replacements and the cut to W&B's 128 characters could make two ids one)."""
    digest = hashlib.blake2b(f"{group}\0{label}".encode(), digest_size=8).hexdigest()
    return f"{re.sub(r'[^A-Za-z0-9_-]', '-', f'{group}-{label}')[:111]}-{digest}"


#: The step of a "row" that is a summary update (RunSummary), kept in order among the rows.
_SUMMARY = -1


def _plan(
    events: Sequence[Event], *, empty_rows: bool = False
) -> tuple[list[Row], list[tuple[str, dict[str, Any]]], int]:
    """The batch as run.log rows (and summary updates in their place among them), config updates
    and the number of events refused.

    Values of one (origin, step) merge into one row; a name already in that row starts a new
    row, so a repeated value is kept rather than overwritten; a summary update starts new rows
    after it. An event using a reserved name is refused whole (wandb would overwrite it
    silently). `empty_rows`: an empty Metrics is a row of its own (wandb's `log({})`)."""
    rows: list[Row] = []
    latest: dict[tuple[str, int], dict[str, Any]] = {}
    config: list[tuple[str, dict[str, Any]]] = []
    refused, names = 0, set[str]()
    for event in events:
        values = _values(event)
        if not RESERVED.isdisjoint(values):
            refused += 1
            names |= RESERVED.intersection(values)
            continue
        label = event.origin.label
        if isinstance(event, Hparams | RunConfig):
            config.append((label, dict(event.params if isinstance(event, Hparams) else event.values)))
        if isinstance(event, RunSummary):
            rows.append((label, _SUMMARY, dict(event.values)))
            latest.clear()
        if not values and not (empty_rows and isinstance(event, Metrics)):
            continue
        row = latest.get((label, event.step))
        sequence = getattr(event, "sequence", None)
        if sequence is not None and row is not None and isinstance(row.get(sequence), list):
            row[sequence].append(event)  # the next item of a list of media logged under one name
            continue
        if row is None or not row.keys().isdisjoint(values):
            row = latest[(label, event.step)] = {}
            rows.append((label, event.step, row))
        row.update(values)
    if refused:
        log.warning("wandb sink: %d events refused for using names wandb reserves: %s", refused, sorted(names))
    return rows, config, refused


def _values(event: Event) -> dict[str, Any]:
    """An event's loggable values by name (histograms and images stay events until the call thread)."""
    match event:
        case Scalar() | Metrics():
            return dict(metric_items(event))
        case Image(sequence=str() as sequence) | Audio(sequence=str() as sequence):
            return {sequence: [event]}  # one item of a list of media: wandb logs the list as one value
        case Histogram(name=name) | Image(name=name) | Audio(name=name) | Video(name=name):
            return {name: event}
        case Text(name=name, text=text):
            return {name: text}
        case Hparams(metrics=metrics):
            return metrics
        case RunConfig() | RunSummary():  # not values of a row
            return {}
    raise TypeError(f"not an event: {event!r}")


def _media(wandb: Any, value: Any) -> Any:
    """A row value as wandb logs it: histograms and images as wandb's media objects, a list of
    them as a list (which wandb writes as one sequence of media)."""
    match value:
        case list():
            return [_media(wandb, item) for item in value]
        case Histogram():
            return _histogram(wandb, value)
        case Image():
            return _image(wandb, value)
        case Audio():
            return wandb_audio(wandb, value)
        case Video():
            return wandb_video(wandb, value)
    return value


def _image(wandb: Any, event: Image) -> Any:
    """A wandb.Image of the raw pixels, through a PIL image of the exact mode: wandb's own numpy
    path squeezes size-1 dimensions (a 1-pixel-high image would lose its row axis)."""
    from PIL import Image as PILImage

    mode = {1: "L", 3: "RGB", 4: "RGBA"}[event.channels]
    return wandb.Image(PILImage.frombytes(mode, (event.width, event.height), event.pixels))


def _histogram(wandb: Any, event: Histogram) -> Any:
    """A wandb.Histogram of raw values (NaN/inf left out: no bin holds them) or of precomputed
    buckets (right edges), merged down to wandb's bin limit."""
    if event.values is not None:
        return wandb.Histogram(sequence=[v for v in event.values if math.isfinite(v)])
    limits, counts = event.bucket_limits or (), event.bucket_counts or ()
    width = limits[1] - limits[0] if len(limits) > 1 else 1.0  # the first left edge: as wide as the next
    group = math.ceil(len(counts) / MAX_BINS)
    starts = range(0, len(counts), group)
    merged = [sum(counts[i : i + group]) for i in starts]
    edges = [limits[0] - width, *(limits[min(i + group, len(limits)) - 1] for i in starts)]
    return wandb.Histogram(np_histogram=(merged, edges))
