"""SummaryWriter: a drop-in for tensorboardX's / torch.utils.tensorboard's writer, on a bus.

Change the import and every tensorboardX call goes through metricbus: by default to a
TensorBoardSink in `logdir` (in its worker process), or to every sink of a MetricLogger passed as
`logger=`. Calls return at once: an image, a clip or a sound costs the calling thread one
conversion of its values (`_summary_images`, `_summary_media`); PNG, GIF and WAV encoding,
protobufs and projector files happen in the sinks. torch's `add_tensor` becomes a Tensor event;
tensorboardX's `export_scalars_to_json` reads add_scalars' values from a temporary file
(`_scalars_json`), not from memory.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import re
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from bus import (
    Audio,
    ChartLayout,
    Embedding,
    Event,
    Graph,
    Histogram,
    Hparams,
    Image,
    InvalidConfig,
    InvalidEvent,
    Mesh,
    Origin,
    PrCurve,
    Scalar,
    Sink,
    Tensor,
    Text,
    Video,
    as_step,
)

from ._frequency import FrequencySpec, LogFrequency
from ._logger import MetricLogger
from ._scalars_json import ScalarsRecord
from ._summary_file_writer import FileWriter
from ._summary_images import (
    as_image_array,
    close_figure,
    figure_rgb,
    host_values,
    image_pixels,
    number_values,
    stack,
    to_nhwc,
)
from ._summary_media import (
    audio_samples,
    boxed_image,
    embedding_fields,
    mesh_config,
    mesh_part,
    onnx_graph,
    openvino_graph,
    pr_curve_series,
    tensor_fields,
    traced_graph,
    video_frames,
)

if TYPE_CHECKING:
    import numpy as np

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


def _write_purge_record(logdir: Path, step: int, suffix: str) -> None:
    """What tensorboardX writes for `purge_step`: a SessionLog START at `step`, on which TensorBoard
    discards the points it has read in this run at steps >= `step`. TensorBoard reads a run's files
    in name order, so this file is named to come after older files (an earlier second) and before
    the file the TensorBoard sink opens now (`.0` sorts before its `.<pid>`)."""
    from tensorboardX.proto.event_pb2 import Event as EventProto
    from tensorboardX.proto.event_pb2 import SessionLog

    from sinks import encode_record

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


def _as_number(value: Any) -> Any:
    """A scalar value as torch's writer reads it (`float(make_np(x))`): a bool, numpy bool or
    bool tensor is 0.0 or 1.0 (a tensor stays a tensor: no host sync here); the rest as given,
    checked by the event."""
    if type(value) is bool or type(value).__name__ == "bool_":
        return float(value)
    if str(getattr(value, "dtype", "")) == "torch.bool" and callable(getattr(value, "float", None)):
        return value.float()
    return value


def _discard(event: Event) -> None:
    """write_to_disk=False: the event was checked when it was built; nothing is published."""


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
    TensorBoard sink this writer creates).
    `add_tensor` (torch's) logs a whole tensor as a Tensor event; `export_scalars_to_json`
    (tensorboardX's) exports add_scalars' values, which wait on disk rather than in memory.

    Images (`add_image`, `add_images`, `add_figure`, `add_image_with_boxes`) become `Image`
    events of uint8 HWC pixels, converted here with numpy (tensorboardX's dataformats, its [0, 1]
    float scaling and its 8-a-row grid); the sinks encode them. `add_custom_scalars` (and its two
    shorthands) becomes a `ChartLayout` event. `add_audio`, `add_video`, `add_pr_curve(_raw)`,
    `add_mesh`, `add_embedding` and `add_graph` (and the ONNX / OpenVINO graph loaders) become
    Audio, Video, PrCurve, Mesh, Embedding and Graph events: raw values converted here, encoded
    by the sinks as tensorboardX writes them (WAV, GIF, protobufs, projector files).

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
        if write_to_disk and logger is None:  # the logdir exists once the writer does, as with tensorboardX
            Path(self.logdir).mkdir(parents=True, exist_ok=True)
        if purge_step is not None and write_to_disk:
            _write_purge_record(Path(self.logdir), as_step(purge_step, "purge_step"), filename_suffix)
        self._owned = logger is None
        self._log = self._new_logger() if logger is None else logger
        self._scalar: Callable[..., None]  # the hot path: one bound method, looked up once
        self._publish: Callable[[Event], None]
        self._bind()
        self._series: dict[tuple[str, str], Origin] = {}  # add_scalars' runs: one Origin per series
        self._record = ScalarsRecord()  # add_scalars' values for export_scalars_to_json
        self._sessions: set[str] = set()  # add_hparams' default session names, never reused
        self._warned: set[str] = set()  # options already reported as having no effect
        self._closed = False
        self._file_writer = FileWriter(self)
        self._default_step: Any = 0  # global_step=None means this (tensorboardX: 0, or use_metadata's)
        self._default_walltime: float | None = None
        self._in_metadata = False

    @property
    def file_writer(self) -> FileWriter | None:
        """tensorboardX's handle on the run (`get_logdir`, `flush`, `close`); None once closed,
        and again a handle after a call reopens the writer."""
        return None if self._closed else self._file_writer

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
        if type(scalar_value) is not float and type(scalar_value) is not int:
            scalar_value = _as_number(scalar_value)
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
        characters other than letters, digits, '_', '.', '-' become '_'). No writer is opened
        here: the TensorBoard sink keeps one file per run. As in tensorboardX (whose series have
        writers of their own), `use_metadata` does not apply: no `global_step` is step 0, no
        `walltime` is now. Each value is also kept for `export_scalars_to_json`, on disk."""
        step = 0 if global_step is None else global_step
        if self._freq is not None and not self._freq(step):
            return
        if self._closed:
            self._reopen()
        stamp = time.time() if walltime is None else walltime
        fields: dict[str, Any] = {"context": self._log.context, "wall_time": stamp}
        logdir = self.logdir
        for tag, value in tag_scalar_dict.items():
            fields["origin"] = self._series_origin(main_tag, tag)
            event = Scalar(main_tag, _as_number(value), step, **fields)
            self._publish(event)
            exported = stamp if type(stamp) is int else event.wall_time
            self._record.add(
                os.path.join(logdir, main_tag, tag), exported, None if global_step is None else event.step, event.value
            )

    def export_scalars_to_json(self, path: str | os.PathLike[str]) -> None:
        """tensorboardX's export: write to `path` every value `add_scalars` logged since the last
        export, as `{"<logdir>/<main_tag>/<tag>": [[timestamp, step, value], ...], ...}` (step
        null where no global_step was given), the JSON text tensorboardX writes; then forget
        them. Values wait in a temporary file, not in memory: a long run's record costs 29 bytes
        a value of disk. `add_scalar` values are not in it, as in tensorboardX."""
        self._record.export(path)

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
        self._publish(Histogram(tag, step, values=number_values(values), **self._fields(walltime)))

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
            bucket_limits=number_values(bucket_limits),
            bucket_counts=number_values(bucket_counts),
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

    def add_image(
        self,
        tag: str,
        img_tensor: Any,
        global_step: int | None = None,
        walltime: float | None = None,
        dataformats: str = "CHW",
    ) -> None:
        """Log an image: a numpy array, torch tensor or nested list whose axes `dataformats` names
        (CHW, HWC, HW, any order; NCHW-like for a batch, drawn as add_images does), with 1, 3 or
        4 channels. uint8 values are pixels; any other dtype is read as [0, 1] and scaled by 255
        (values outside it are clipped, NaN is 0). This thread makes one uint8 HWC copy; sinks
        encode it (TensorBoard: PNG). Grayscale stays one channel (tensorboardX writes it as RGB)."""
        step = self._default_step if global_step is None else global_step
        if self._freq is not None and not self._freq(step):
            return
        if self._closed:
            self._reopen()
        self._publish_image(tag, to_nhwc(as_image_array(img_tensor), dataformats), step, walltime)

    def add_images(
        self,
        tag: str,
        img_tensor: Any,
        global_step: int | None = None,
        walltime: float | None = None,
        dataformats: str = "NCHW",
    ) -> None:
        """Log a batch of images as one image, a grid of 8 a row as tensorboardX draws it: a 4-d
        array or tensor (NCHW, NHWC, any order), or a list of 3-d images with dataformats CHW or
        HWC (tensorboardX prints a message and writes nothing for other formats; this raises).
        Values as in add_image."""
        step = self._default_step if global_step is None else global_step
        if self._freq is not None and not self._freq(step):
            return
        if self._closed:
            self._reopen()
        if isinstance(img_tensor, (list, tuple)):
            if not isinstance(dataformats, str) or dataformats.upper() not in ("CHW", "HWC"):
                raise InvalidEvent("dataformats", dataformats, "a list of images takes 'CHW' or 'HWC'")
            img_tensor, dataformats = stack([as_image_array(image) for image in img_tensor]), "N" + dataformats
        self._publish_image(tag, to_nhwc(as_image_array(img_tensor), dataformats), step, walltime)

    def add_figure(
        self,
        tag: str,
        figure: Any,
        global_step: int | None = None,
        close: bool = True,
        walltime: float | None = None,
    ) -> None:
        """Log a matplotlib figure (or a list of them, as a grid) as an RGB image. It is rendered
        here, on the calling thread (matplotlib is not thread-safe; this is most of the call's
        cost), then closed if `close`, as tensorboardX does, also when `log_freq` skips the call."""
        step = self._default_step if global_step is None else global_step
        figures = figure if isinstance(figure, (list, tuple)) else [figure]
        if self._freq is not None and not self._freq(step):
            if close:
                for each in figures:
                    close_figure(each)
            return
        if self._closed:
            self._reopen()
        images = [figure_rgb(each, close) for each in figures]
        nhwc = images[0][None] if len(images) == 1 else stack(images)
        self._publish_image(tag, nhwc, step, walltime)

    def add_custom_scalars(self, layout: Mapping[str, Mapping[str, Sequence[Any]]]) -> None:
        """Lay out the CUSTOM SCALARS tab: `{category: {chart title: [kind, tags]}}`, kind
        "Multiline" (a list of tags, or regular expressions of tags, on one chart) or "Margin"
        (three tags: value, lower, upper). TensorBoard shows the latest layout of a run; the
        layout goes to the sinks that take a ChartLayout (TensorBoard, JSONL, memory)."""
        if self._closed:
            self._reopen()
        self._publish(ChartLayout(layout, **self._fields(None)))  # type: ignore[arg-type]  # it copies into tuples

    def add_custom_scalars_multilinechart(
        self, tags: Sequence[str], category: str = "default", title: str = "untitled"
    ) -> None:
        """A layout of one Multiline chart of `tags` (it replaces the run's layout, as in tensorboardX)."""
        self.add_custom_scalars({category: {title: ["Multiline", tags]}})

    def add_custom_scalars_marginchart(
        self, tags: Sequence[str], category: str = "default", title: str = "untitled"
    ) -> None:
        """A layout of one Margin chart of three tags: value, lower, upper (it replaces the run's layout)."""
        self.add_custom_scalars({category: {title: ["Margin", tags]}})

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

    def _begin(self, global_step: Any) -> Any | None:
        """The step of a call (None: `log_freq` skips it), the writer reopened if it was closed."""
        step = self._default_step if global_step is None else global_step
        if self._freq is not None and not self._freq(step):
            return None
        if self._closed:
            self._reopen()
        return step

    def _fields(self, walltime: float | None) -> dict[str, Any]:
        """The origin/context of this writer's logger, and the wall time if one was given."""
        fields: dict[str, Any] = {"origin": self._log.origin, "context": self._log.context}
        if walltime is None:
            walltime = self._default_walltime
        if walltime is not None:
            fields["wall_time"] = walltime
        return fields

    def _publish_image(self, tag: str, nhwc: np.ndarray, step: Any, walltime: float | None) -> None:
        pixels, height, width, channels = image_pixels(nhwc)
        fields = self._fields(walltime)
        self._publish(Image(tag, step, pixels=pixels, height=height, width=width, channels=channels, **fields))

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

    # ---- media and one-off records: converted here, encoded by the sinks ----

    def add_audio(
        self,
        tag: str,
        snd_tensor: Any,
        global_step: int | None = None,
        sample_rate: int = 44100,
        walltime: float | None = None,
    ) -> None:
        """Log a sound clip: shape (frames,) or (frames, 1 or 2), values in [-1, 1] (clipped to
        it, as tensorboardX does). This thread makes the 16-bit PCM samples tensorboardX's
        soundfile would write; sinks wrap them in a WAV file (TensorBoard AUDIO tab,
        `wandb.Audio`, an MLflow .wav artifact)."""
        step = self._begin(global_step)
        if step is None:
            return
        samples, channels = audio_samples(snd_tensor)
        fields = self._fields(walltime)
        self._publish(Audio(tag, step, samples=samples, channels=channels, sample_rate=sample_rate, **fields))

    def add_video(
        self,
        tag: str,
        vid_tensor: Any,
        global_step: int | None = None,
        fps: float = 4,
        walltime: float | None = None,
        dataformats: str = "NTCHW",
    ) -> None:
        """Log a batch of clips (NTCHW, any order; 1 or 3 channels; uint8 pixels or floats in
        [0, 1]) as one animated GIF, the clips side by side as tensorboardX lays them out. This
        thread lays out the uint8 frames; sinks encode the GIF with tensorboardX's encoder,
        which needs moviepy (checked here, so a missing moviepy fails this call, not a sink)."""
        step = self._begin(global_step)
        if step is None:
            return
        if importlib.util.find_spec("moviepy") is None:
            raise ImportError("SummaryWriter.add_video needs moviepy to encode the GIF: pip install moviepy")
        frames = video_frames(vid_tensor, dataformats)
        length, height, width, channels = frames.shape
        shape = {"length": length, "height": height, "width": width, "channels": channels}
        self._publish(Video(tag, step, frames=frames.tobytes(), fps=fps, **shape, **self._fields(walltime)))

    def add_image_with_boxes(
        self,
        tag: str,
        img_tensor: Any,
        box_tensor: Any,
        global_step: int | None = None,
        walltime: float | None = None,
        dataformats: str = "CHW",
        labels: Sequence[str] | str | None = None,
        *,
        rescale: float = 1,
    ) -> None:
        """Log one image with boxes (N x 4: xmin, ymin, xmax, ymax) and optional labels drawn
        on it, as tensorboardX draws them (its PIL drawing, on this thread; grayscale becomes
        RGB). It becomes an Image, so every sink that takes images gets it; sinks encode it.
        Labels whose count is not the boxes' are left out with a warning, as in tensorboardX."""
        step = self._begin(global_step)
        if step is None:
            return
        names = [labels] if isinstance(labels, str) else None if labels is None else list(labels)
        boxes = len(host_values(box_tensor))
        if names is not None and len(names) != boxes:
            log.warning(
                "SummaryWriter.add_image_with_boxes: %d labels for %d boxes; labels left out", len(names), boxes
            )
            names = None
        pixels, height, width, channels = boxed_image(img_tensor, box_tensor, dataformats, names, rescale)
        fields = self._fields(walltime)
        self._publish(Image(tag, step, pixels=pixels, height=height, width=width, channels=channels, **fields))

    def add_pr_curve(
        self,
        tag: str,
        labels: Any,
        predictions: Any,
        global_step: int | None = None,
        num_thresholds: int = 127,
        weights: Any = None,
        walltime: float | None = None,
    ) -> None:
        """Log a precision-recall curve of binary `labels` and `predictions` in [0, 1] (PR
        CURVES tab). The curve (6 series of `num_thresholds` points, at most 127) is computed
        here with tensorboardX's numpy code, so the event is small whatever the predictions."""
        step = self._begin(global_step)
        if step is None:
            return
        curve = pr_curve_series(labels, predictions, num_thresholds, weights)
        self._publish(PrCurve(tag, step, **curve, **self._fields(walltime)))

    def add_pr_curve_raw(
        self,
        tag: str,
        true_positive_counts: Any,
        false_positive_counts: Any,
        true_negative_counts: Any,
        false_negative_counts: Any,
        precision: Any,
        recall: Any,
        global_step: int | None = None,
        num_thresholds: int = 127,
        weights: Any = None,
        walltime: float | None = None,
    ) -> None:
        """Log a precision-recall curve from its six series, one value per threshold (sequences,
        arrays or tensors of one length). `weights` is accepted and unused, as in tensorboardX."""
        step = self._begin(global_step)
        if step is None:
            return
        counts = {
            "true_positives": host_values(true_positive_counts),
            "false_positives": host_values(false_positive_counts),
            "true_negatives": host_values(true_negative_counts),
            "false_negatives": host_values(false_negative_counts),
        }
        thresholds = min(num_thresholds, 127) if isinstance(num_thresholds, int) else num_thresholds
        series = {"precision": host_values(precision), "recall": host_values(recall), "num_thresholds": thresholds}
        self._publish(PrCurve(tag, step, **counts, **series, **self._fields(walltime)))

    def add_mesh(
        self,
        tag: str,
        vertices: Any,
        colors: Any = None,
        faces: Any = None,
        config_dict: Any = None,
        global_step: int | None = None,
        walltime: float | None = None,
    ) -> None:
        """Log a mesh or point cloud (MESH tab): `vertices` (B, N, 3), optional `colors`
        (B, N, 3, values 0-255) and `faces` (B, F, 3, vertex indices), and a three.js
        `config_dict`. Each becomes float32 bytes here; the sink writes tensorboardX's summary."""
        step = self._begin(global_step)
        if step is None:
            return
        parts: dict[str, Any] = {}
        for field, tensor in (("vertices", vertices), ("colors", colors), ("faces", faces)):
            if tensor is not None:
                parts[field], parts[f"{field}_shape"] = mesh_part(tensor, field)
        if "vertices" not in parts:
            raise InvalidEvent("vertices", None, "a mesh needs vertices")
        self._publish(Mesh(tag, step, **parts, config=mesh_config(config_dict), **self._fields(walltime)))

    def add_embedding(
        self,
        mat: Any,
        metadata: Any = None,
        label_img: Any = None,
        global_step: int | None = None,
        tag: str = "default",
        metadata_header: Any = None,
    ) -> None:
        """Log points for the PROJECTOR: `mat` (N, D), optional `metadata` (one label per point,
        or rows of columns with a `metadata_header`), optional `label_img` (N, 1 or 3, S, S).
        The TensorBoard sink writes tensorboardX's files (`<step:05d>/<tag>/tensors.tsv`,
        metadata.tsv, sprite.png, and an entry in projector_config.pbtxt) beside the run's event
        file. `global_step=None` is step 0, as in tensorboardX."""
        step = self._begin(0 if global_step is None else global_step)
        if step is None:
            return
        fields = embedding_fields(mat, metadata, label_img, metadata_header)
        self._publish(Embedding(tag, step, **fields, **self._fields(None)))

    def add_tensor(self, tag: str, tensor: Any, global_step: int | None = None, walltime: float | None = None) -> None:
        """Log a whole tensor (torch's add_tensor): its values, dtype and shape, as a Tensor event
        the TensorBoard sink writes as torch does (plugin "tensor", TensorBoard's TIME SERIES and
        `EventAccumulator.Tensors`). Every dtype torch writes: float16, bfloat16, float32/64,
        int8/16/32/64, uint8, bool, complex64/128; others are refused (InvalidEvent, a
        ValueError, as torch's ValueError). A torch tensor or a numpy array, at most 64 MiB."""
        step = self._begin(global_step)
        if step is None:
            return
        self._publish(Tensor(tag, step, **tensor_fields(tensor), **self._fields(walltime)))

    def add_graph(
        self, model: Any, input_to_model: Any = None, verbose: bool = False, use_strict_trace: bool = True
    ) -> None:
        """Log a torch model's graph (GRAPHS tab): traced here with torch.jit, by the code both
        tensorboardX and torch.utils.tensorboard use (the model lives on this thread); the sink
        writes the GraphDef and its run metadata. Costs a trace: call it once, not per step."""
        if self._closed:
            self._reopen()
        graph_def, run_metadata = traced_graph(model, input_to_model, verbose, use_strict_trace)
        self._publish(Graph(graph_def, run_metadata=run_metadata, step=self._default_step, **self._fields(None)))

    def add_onnx_graph(self, onnx_model_file: str) -> None:
        """Log the graph of an ONNX model file, read by tensorboardX's loader (needs `onnx`)."""
        if self._closed:
            self._reopen()
        self._publish(Graph(onnx_graph(onnx_model_file), step=self._default_step, **self._fields(None)))

    def add_openvino_graph(self, xmlname: str) -> None:
        """Log the graph of an OpenVINO model (its .xml file), read by tensorboardX's loader."""
        if self._closed:
            self._reopen()
        self._publish(Graph(openvino_graph(xmlname), step=self._default_step, **self._fields(None)))
