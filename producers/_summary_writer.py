"""SummaryWriter: a drop-in for tensorboardX's / torch.utils.tensorboard's writer, on a bus.

Change the import and a script's scalars, histograms, text and hparams go through metricbus: by
default to a TensorBoardSink in `logdir` (in its worker process), or to every sink of a
MetricLogger passed as `logger=`. Calls return at once. Media, graph and embedding methods raise
NotImplementedError naming an alternative, rather than silently doing nothing.
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn

from bus import Event, Histogram, Hparams, InvalidConfig, Origin, Scalar, Sink, Text
from bus._validate import as_step

from ._frequency import FrequencySpec, LogFrequency
from ._logger import MetricLogger

__all__ = ["SummaryWriter"]

log = logging.getLogger("metricbus")

_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")


def _default_logdir(comment: str) -> str:
    """tensorboardX's and torch's default: runs/<Mon DD_HH-MM-SS>_<host><comment>."""
    stamp = datetime.now().strftime("%b%d_%H-%M-%S")
    return str(Path("runs") / f"{stamp}_{socket.gethostname()}{comment}")


def _run_part(text: str) -> str:
    """A name usable as an origin part (one directory level): unsafe characters become '_'."""
    cleaned = _UNSAFE.sub("_", str(text))[:128]
    return cleaned if cleaned not in ("", ".", "..") else "_"


def _host_values(values: Any) -> Any:
    """Torch tensors moved to the CPU as numpy; numpy arrays and sequences as they are."""
    detach = getattr(values, "detach", None)
    return detach().cpu().numpy() if detach is not None else values


def _write_purge_record(logdir: Path, step: int, suffix: str) -> None:
    """What tensorboardX writes for `purge_step`: a SessionLog START at `step`, on which TensorBoard
    discards the points it has read in this run at steps >= `step`. TensorBoard reads a run's files
    in name order, so this file is named to come after older files (an earlier second) and before
    the file the TensorBoard sink opens now (`.0` sorts before its `.<pid>`)."""
    from tensorboardX.proto.event_pb2 import Event as EventProto
    from tensorboardX.proto.event_pb2 import SessionLog

    from sinks._tensorboard import encode_record

    now = time.time()
    version = EventProto(wall_time=now, file_version="brain.Event:2")  # needed for TensorBoard to purge
    start = EventProto(wall_time=now, step=step, session_log=SessionLog(status=SessionLog.START))
    logdir.mkdir(parents=True, exist_ok=True)
    name = f"events.out.tfevents.{int(now)}.{socket.gethostname()}.0.purge{suffix}"
    with open(logdir / name, "ab") as file:
        file.write(encode_record(version.SerializeToString()) + encode_record(start.SerializeToString()))


def _check_scalar(name: str, value: Any, step: int, *, wall_time: float | None = None) -> None:
    """write_to_disk=False: check the call as a logged one would be checked, then drop it."""
    Scalar(name, value, step, wall_time=time.time() if wall_time is None else wall_time)


def _discard(event: Event) -> None:
    """write_to_disk=False: the event was checked when it was built; nothing is published."""


def _unsupported(method: str, alternative: str) -> Callable[..., NoReturn]:
    """A method that refuses loudly and says what to use instead."""

    def refuse(self: SummaryWriter, *args: object, **kwargs: object) -> NoReturn:
        raise NotImplementedError(f"SummaryWriter.{method} is not supported by metricbus; {alternative}")

    refuse.__name__ = refuse.__qualname__ = method
    refuse.__doc__ = f"Not supported: raises NotImplementedError ({alternative})."
    return refuse


_IMAGES = "log images with tensorboardX.SummaryWriter (another run directory) or wandb.Image"


class SummaryWriter:
    """The tensorboardX / torch.utils.tensorboard SummaryWriter API, publishing to metricbus.

    Honoured: `logdir`/`log_dir` (tensorboardX's naming default when both are empty), `comment`
    (in that default), `filename_suffix`, `purge_step` (a SessionLog START at that step, written
    once when the writer opens: TensorBoard hides the run's older points from that step on),
    `write_to_disk=False` (nothing is written or published; calls are still checked), every
    `walltime`, one-element arrays and tensors wherever a number is taken.
    Accepted because they only tune tensorboardX's own queue, which the bus replaces (it batches
    and flushes on its own schedule): `max_queue`, `flush_secs`; `comet_config` only disabled.
    Accepted with a warning (once per writer) because the TensorBoard sink cannot write them:
    add_scalar's `display_name`, `summary_description`, `double_precision` (float32 is stored),
    add_histogram's `bins`/`max_bins` (the sink's `histogram_bins` decides).
    Refused: an unknown keyword (TypeError, as Python says it), an enabled `comet_config`
    (NotImplementedError), `purge_step`/`filename_suffix` with `logger=` (they configure the
    TensorBoard sink this writer creates). Media, graph and embedding methods: NotImplementedError.

    `logger=` sends everything to an existing MetricLogger (any sinks; `close()` only flushes it).
    `log_freq=` (an int N, "batch", or a LogFrequency) skips calls before any event is built;
    a call with `global_step=None` counts as step 0, the step tensorboardX records for it.
    A call after `close()` goes on, as in tensorboardX: the writer opens a new logger (a new
    event file in `logdir`), which `close()` or the interpreter's exit closes.
    """

    def __init__(
        self,
        logdir: str | Path | None = None,
        comment: str = "",
        purge_step: int | None = None,
        max_queue: int = 10,
        flush_secs: int = 120,
        filename_suffix: str = "",
        write_to_disk: bool = True,
        log_dir: str | Path | None = None,
        comet_config: Mapping[str, Any] | None = None,
        *,
        logger: MetricLogger | None = None,
        log_freq: FrequencySpec | None = None,
    ) -> None:
        chosen = logdir if logdir is not None else log_dir
        self.logdir = str(chosen) if chosen else _default_logdir(comment)
        if comet_config is not None and comet_config.get("disabled") is not True:
            raise NotImplementedError(
                "SummaryWriter(comet_config=...) is not supported by metricbus: there is no Comet sink; "
                "use tensorboardX.SummaryWriter for Comet"
            )
        if logger is not None and (purge_step is not None or filename_suffix):
            raise InvalidConfig(
                "purge_step and filename_suffix apply to the TensorBoard sink this writer creates; "
                "with logger=, give filename_suffix to that logger's TensorBoardSink"
            )
        self._freq = None if log_freq is None else LogFrequency.parse(log_freq)
        self._write_to_disk = write_to_disk
        self._filename_suffix = filename_suffix
        if purge_step is not None and write_to_disk:
            _write_purge_record(Path(self.logdir), as_step(purge_step, "purge_step"), filename_suffix)
        self._owned = logger is None
        self._log = self._new_logger() if logger is None else logger
        self._scalar: Callable[..., None]  # the hot path: one bound method, looked up once
        self._publish: Callable[[Event], None]
        self._bind()
        self._series: dict[tuple[str, str], Origin] = {}  # add_scalars' runs: one Origin per series
        self._sessions: set[str] = set()  # add_hparams' default session names, never reused
        self._warned: set[str] = set()  # options already reported as having no effect
        self._closed = False
        self._default_step: Any = 0  # global_step=None means this (tensorboardX: 0, or use_metadata's)
        self._default_walltime: float | None = None
        self._in_metadata = False

    @property
    def logger(self) -> MetricLogger:
        """The MetricLogger this writer publishes to (add sinks or producers to it)."""
        return self._log

    def get_logdir(self) -> str:
        """The directory the default TensorBoard sink writes to."""
        return self.logdir

    # ---- what a training script calls ----

    def add_scalar(
        self,
        tag: str,
        scalar_value: Any,
        global_step: int | None = None,
        walltime: float | None = None,
        display_name: str = "",
        summary_description: str = "",
        new_style: bool = False,
        double_precision: bool = False,
    ) -> None:
        """Log one value (a number, numpy scalar, or one-element array or tensor); `global_step=None`
        is step 0. `new_style` changes only how torch stores the value (TensorBoard draws the same
        chart); `display_name`, `summary_description` and `double_precision` (with `new_style`)
        are accepted, with a warning once, as the TensorBoard sink writes no per-tag metadata and
        stores float32. torch's positional order (..., walltime, new_style, double_precision) works."""
        step = self._default_step if global_step is None else global_step
        if self._freq is not None and not self._freq(step):
            return
        if self._closed:
            self._reopen()
        if display_name or summary_description or double_precision:
            self._display_options(display_name, summary_description, new_style, double_precision)
        if walltime is None and self._default_walltime is None:
            self._scalar(tag, scalar_value, step)
        else:
            self._scalar(tag, scalar_value, step, wall_time=self._default_walltime if walltime is None else walltime)

    def add_scalars(
        self,
        main_tag: str,
        tag_scalar_dict: Mapping[str, Any],
        global_step: int | None = None,
        walltime: float | None = None,
    ) -> None:
        """Several series on one chart, as tensorboardX draws them: the scalar `main_tag` in the
        run `<logdir>/<main_tag>/<tag>` for each tag (events with origin site=main_tag, node=tag;
        characters other than letters, digits, '_', '.', '-' become '_'). Nothing is kept per
        value and no writer is opened here: the TensorBoard sink keeps one file per run."""
        step = self._default_step if global_step is None else global_step
        if self._freq is not None and not self._freq(step):
            return
        if self._closed:
            self._reopen()
        fields = self._fields(walltime)
        for tag, value in tag_scalar_dict.items():
            fields["origin"] = self._series_origin(main_tag, tag)
            self._publish(Scalar(main_tag, value, step, **fields))

    def add_histogram(
        self,
        tag: str,
        values: Any,
        global_step: int | None = None,
        bins: Any = "tensorflow",
        walltime: float | None = None,
        max_bins: int | None = None,
    ) -> None:
        """Log a distribution (sequence, numpy array or tensor). The sink bins it off this thread
        with its own `histogram_bins`; other `bins` or `max_bins` are accepted with a warning once."""
        step = self._default_step if global_step is None else global_step
        if self._freq is not None and not self._freq(step):
            return
        if self._closed:
            self._reopen()
        if not (isinstance(bins, str) and bins == "tensorflow") or max_bins is not None:
            self._ignored("add_histogram(bins=, max_bins=)", "the TensorBoard sink bins into its histogram_bins")
        self._publish(Histogram(tag, step, values=_host_values(values), **self._fields(walltime)))

    def add_histogram_raw(
        self,
        tag: str,
        min: float,  # tensorboardX's parameter names, shadowing builtins this method does not use
        max: float,
        num: float,
        sum: float,
        sum_squares: float,
        bucket_limits: Any,
        bucket_counts: Any,
        global_step: int | None = None,
        walltime: float | None = None,
    ) -> None:
        """Log precomputed buckets (right edges and counts). TensorBoard draws histograms from the
        buckets; min, max, num, sum and sum_squares are not carried (the sink derives them)."""
        step = self._default_step if global_step is None else global_step
        if self._freq is not None and not self._freq(step):
            return
        if self._closed:
            self._reopen()
        event = Histogram(
            tag,
            step,
            bucket_limits=_host_values(bucket_limits),
            bucket_counts=_host_values(bucket_counts),
            **self._fields(walltime),
        )
        self._publish(event)

    def add_text(
        self, tag: str, text_string: str, global_step: int | None = None, walltime: float | None = None
    ) -> None:
        """Log a piece of text (shown in TensorBoard's TEXT tab, markdown rendered)."""
        step = self._default_step if global_step is None else global_step
        if self._freq is not None and not self._freq(step):
            return
        if self._closed:
            self._reopen()
        self._publish(Text(tag, text_string, step, **self._fields(walltime)))

    def add_hparams(
        self,
        hparam_dict: dict[str, Any],
        metric_dict: dict[str, Any],
        hparam_domain_discrete: Any = None,
        run_name: Any = None,
        global_step: int | None = None,
        *,
        name: str | None = None,
    ) -> None:
        """One HPARAMS session, as tensorboardX and torch write it: in its own sub-run
        `<logdir>/<name>` (default: the current time, never the same twice), with each metric also
        as a scalar there, so N calls are N rows of the tab. Both positional orders work: torch's
        (domain, run_name, global_step) and tensorboardX's (name, global_step).
        `hparam_domain_discrete` is ignored (the tab infers each domain from the values)."""
        if isinstance(hparam_domain_discrete, str):  # tensorboardX: add_hparams(h, m, name, global_step)
            name, hparam_domain_discrete = hparam_domain_discrete, None
            if isinstance(run_name, int) and not isinstance(run_name, bool):
                global_step, run_name = run_name, None
        if type(hparam_dict) is not dict or type(metric_dict) is not dict:
            raise TypeError("hparam_dict and metric_dict should be dictionaries")  # as both libraries do
        if self._closed:
            self._reopen()
        run = name or run_name or self._session_name()
        origin = Origin(site=_run_part(run), rank=self._log.origin.rank)
        step = 0 if global_step is None else global_step
        self._publish(Hparams(dict(hparam_dict), dict(metric_dict), step=step, origin=origin))

    @contextlib.contextmanager
    def use_metadata(self, *, global_step: int | None = None, walltime: float | None = None) -> Iterator[SummaryWriter]:
        """Within the block, calls without `global_step` / `walltime` use these (tensorboardX's API)."""
        if global_step is None and walltime is None:
            raise InvalidConfig("use_metadata needs global_step or walltime")
        if self._in_metadata:
            raise InvalidConfig("use_metadata blocks do not nest")
        self._in_metadata = True
        self._default_step = 0 if global_step is None else global_step
        self._default_walltime = walltime
        try:
            yield self
        finally:
            self._in_metadata, self._default_step, self._default_walltime = False, 0, None

    def flush(self) -> None:
        """Block until everything logged so far is written by every sink (nothing to do once closed)."""
        if not self._closed:
            self._log.flush()

    def close(self) -> None:
        """Flush; close the underlying logger if this writer created it. Safe to call twice; a
        call after it reopens the writer, as in tensorboardX."""
        if self._closed:
            return
        self._closed = True
        if self._owned:
            self._log.close()
        else:
            self._log.flush()

    def __enter__(self) -> SummaryWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ---- helpers ----

    def _new_logger(self) -> MetricLogger:
        """The logger a writer without `logger=` owns: a TensorBoardSink in logdir, or no sink."""
        sinks: list[Sink] = []
        if self._write_to_disk:
            from sinks import TensorBoardSink

            sinks.append(TensorBoardSink(self.logdir, filename_suffix=self._filename_suffix))
        return MetricLogger(sinks=sinks)

    def _bind(self) -> None:
        """Point the calls at the logger, or (write_to_disk=False) at checks that publish nothing."""
        if self._write_to_disk:
            self._scalar, self._publish = self._log.scalar, self._log.publish
        else:
            self._scalar, self._publish = _check_scalar, _discard

    def _reopen(self) -> None:
        """A call after close() goes on, as in tensorboardX: an owned logger is replaced by a new
        one (a new event file in logdir); a caller's logger is used as it is."""
        if self._owned:
            self._log = self._new_logger()
            self._bind()
        self._closed = False

    def _fields(self, walltime: float | None) -> dict[str, Any]:
        """The origin/context of this writer's logger, and the wall time if one was given."""
        fields: dict[str, Any] = {"origin": self._log.origin, "context": self._log.context}
        if walltime is None:
            walltime = self._default_walltime
        if walltime is not None:
            fields["wall_time"] = walltime
        return fields

    def _series_origin(self, main_tag: str, tag: str) -> Origin:
        origin = self._series.get((main_tag, tag))
        if origin is None:
            origin = Origin(site=_run_part(main_tag), node=_run_part(tag), rank=self._log.origin.rank)
            self._series[(main_tag, tag)] = origin
        return origin

    def _session_name(self) -> str:
        """tensorboardX's name for an unnamed hparams session, the current time; with a suffix if
        a coarse clock gives this writer the same time twice (two sessions would become one)."""
        name = str(time.time())
        if name in self._sessions:
            name = f"{name}-{len(self._sessions)}"
        self._sessions.add(name)
        return name

    def _display_options(self, display_name: Any, description: Any, new_style: bool, double_precision: bool) -> None:
        """Warn once about add_scalar's display options. A bool in `display_name` is torch's
        positional `new_style` (then `summary_description` holds its `double_precision`)."""
        if isinstance(display_name, bool):
            new_style, double_precision, display_name, description = display_name, bool(description), "", ""
        if display_name or description:
            self._ignored(
                "add_scalar(display_name=, summary_description=)", "the TensorBoard sink writes no tag metadata"
            )
        if new_style and double_precision:
            self._ignored("add_scalar(double_precision=True)", "the TensorBoard sink stores scalars as float32")

    def _ignored(self, option: str, why: str) -> None:
        """Say once per writer that an option has no effect, so nothing passed vanishes silently."""
        if option not in self._warned:
            self._warned.add(option)
            log.warning("SummaryWriter: %s has no effect here: %s", option, why)

    # ---- not supported: fail loudly, say what to use instead ----

    add_image = _unsupported("add_image", _IMAGES)
    add_images = _unsupported("add_images", _IMAGES)
    add_image_with_boxes = _unsupported("add_image_with_boxes", _IMAGES)
    add_figure = _unsupported("add_figure", "save the figure to a file, or use tensorboardX.SummaryWriter.add_figure")
    add_video = _unsupported("add_video", "use tensorboardX.SummaryWriter.add_video or wandb.Video")
    add_audio = _unsupported("add_audio", "use tensorboardX.SummaryWriter.add_audio or wandb.Audio")
    add_graph = _unsupported("add_graph", "use torch.utils.tensorboard.SummaryWriter.add_graph once, outside the loop")
    add_onnx_graph = _unsupported("add_onnx_graph", "use tensorboardX.SummaryWriter.add_onnx_graph once")
    add_openvino_graph = _unsupported("add_openvino_graph", "use tensorboardX.SummaryWriter.add_openvino_graph")
    add_embedding = _unsupported("add_embedding", "use tensorboardX.SummaryWriter.add_embedding")
    add_pr_curve = _unsupported("add_pr_curve", "log precision/recall as scalars, or use tensorboardX directly")
    add_pr_curve_raw = _unsupported("add_pr_curve_raw", "log precision/recall as scalars, or use tensorboardX")
    add_mesh = _unsupported("add_mesh", "use tensorboardX.SummaryWriter.add_mesh")
    add_tensor = _unsupported("add_tensor", "log scalars or a histogram of the tensor instead")
    add_custom_scalars = _unsupported("add_custom_scalars", "use tensorboardX.SummaryWriter.add_custom_scalars")
    add_custom_scalars_multilinechart = _unsupported(
        "add_custom_scalars_multilinechart", "use tensorboardX.SummaryWriter.add_custom_scalars_multilinechart"
    )
    add_custom_scalars_marginchart = _unsupported(
        "add_custom_scalars_marginchart", "use tensorboardX.SummaryWriter.add_custom_scalars_marginchart"
    )
    export_scalars_to_json = _unsupported(
        "export_scalars_to_json", "add a JsonlSink or CsvSink to writer.logger; nothing is kept in memory here"
    )
