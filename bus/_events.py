"""The typed events: one flat, tagged union of frozen msgspec Structs.

Every event knows where it came from (`origin`), when (`wall_time`, `step`) and, optionally, in
which part of the run (`context`). Constructors validate and coerce their fields, so a bad value
raises `InvalidEvent` at the call that built it, never inside a sink task.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from itertools import pairwise
from typing import Any, Literal, TypeAlias

import msgspec
from msgspec.structs import force_setattr

from ._errors import InvalidEvent
from ._validate import (
    MAX_STEP,
    MAX_WALL_TIME,
    as_float_list,
    as_image_shape,
    as_name,
    as_param,
    as_pixels,
    as_step,
    as_text,
    as_value,
    as_values,
    as_wall_time,
    known_names,
)
from ._validate_media import (
    AUDIO_CHANNELS,
    MAX_PR_THRESHOLDS,
    SPRITE_CHANNELS,
    TENSOR_DTYPES,
    VIDEO_CHANNELS,
    as_blob,
    as_choice,
    as_curve,
    as_fps,
    as_json,
    as_lines,
    as_projector_name,
    as_shape3,
    as_size,
    as_sprite,
    as_tensor_dtype,
    as_tensor_shape,
)

__all__ = [
    "DEFAULT_ORIGIN",
    "EVENT_TYPES",
    "Audio",
    "ChartKind",
    "ChartLayout",
    "Context",
    "Embedding",
    "Event",
    "Graph",
    "Histogram",
    "Hparams",
    "Image",
    "Mesh",
    "Metrics",
    "Origin",
    "PrCurve",
    "RunConfig",
    "RunSummary",
    "Scalar",
    "Tensor",
    "Text",
    "Video",
]

_IDENTIFIER = re.compile(r"[A-Za-z0-9_.\-]{1,128}")
MAIN = "main"  # the default origin's label
_RANK = re.compile(r"rank(0|[1-9][0-9]*)")  # a rank's part of a label; "rank01" is a name


def _check_identifier(value: str, field: str) -> None:
    if type(value) is not str:
        raise InvalidEvent(field, value, f"must be a str, not {type(value).__name__}")
    if value and (not _IDENTIFIER.fullmatch(value) or value in (".", "..")):
        raise InvalidEvent(field, value, "must be 1-128 characters of letters, digits, '_', '.', '-'")


class Origin(msgspec.Struct, frozen=True, omit_defaults=True, gc=False):
    """Which process produced an event: a federated site, a node, a rank. Sinks place events by
    `label` (one TensorBoard run / one W&B run / one MLflow run per origin)."""

    site: str = ""
    node: str = ""
    rank: int | None = None

    def __post_init__(self) -> None:
        _check_identifier(self.site, "origin.site")
        _check_identifier(self.node, "origin.node")
        if self.rank is not None:
            force_setattr(self, "rank", as_step(self.rank, "origin.rank"))

    @property
    def label(self) -> str:
        """A short, readable, path-safe name, one per origin (two origins never share one).

        Parts joined by '/': the site as itself, the node as itself after a site and as
        `node=<name>` without one, the rank as `rank<N>`; the default origin is 'main'. A name
        that would read as something else is written `site=<name>` / `node=<name>`: a site called
        'main' or 'rank3', a node called 'rank3'. `Origin.from_label` reads a label back.
        """
        parts = []
        if self.site:
            parts.append(f"site={self.site}" if self.site == MAIN or _RANK.fullmatch(self.site) else self.site)
        if self.node:
            parts.append(self.node if self.site and not _RANK.fullmatch(self.node) else f"node={self.node}")
        if self.rank is not None:
            parts.append(f"rank{self.rank}")
        return "/".join(parts) or MAIN

    @classmethod
    def from_label(cls, label: str) -> Origin:
        """The origin whose `label` this is; InvalidEvent if no origin has it."""
        if label == MAIN:
            return cls()
        fields: dict[str, str | int] = {}
        for part in label.split("/"):
            key, _, value = part.rpartition("=")
            if key not in ("", "site", "node") or "rank" in fields:
                break  # an unknown key, or a part after the rank
            if key:
                fields[key] = value
            elif match := _RANK.fullmatch(value):
                fields["rank"] = int(match.group(1))
            else:  # a bare name: the site, or the node after a site
                fields["node" if "site" in fields else "site"] = value
        else:
            try:
                origin = cls(**fields)  # type: ignore[arg-type]
            except (InvalidEvent, TypeError):
                pass
            else:
                if origin.label == label:  # one spelling per origin: "node=b" after a site is not one
                    return origin
        raise InvalidEvent("label", label, "is not the label of an origin (see Origin.label)")


DEFAULT_ORIGIN = Origin()


class Context(msgspec.Struct, frozen=True, omit_defaults=True, gc=False):
    """Where in the run an event belongs, when the step alone does not say it."""

    epoch: int | None = None
    round: int | None = None
    task: str | None = None

    def __post_init__(self) -> None:
        if self.epoch is not None:
            force_setattr(self, "epoch", as_step(self.epoch, "context.epoch"))
        if self.round is not None:
            force_setattr(self, "round", as_step(self.round, "context.round"))
        if self.task is not None:
            force_setattr(self, "task", as_name(self.task, "context.task"))


class _Base(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag_field="kind", tag=str.lower, gc=False):
    """Fields every event carries; keyword-only, after each event's own fields."""

    wall_time: float = msgspec.field(default_factory=time.time)
    origin: Origin = DEFAULT_ORIGIN
    context: Context | None = None

    def _check_base(self) -> None:
        force_setattr(self, "wall_time", as_wall_time(self.wall_time))
        if type(self.origin) is not Origin:
            raise InvalidEvent("origin", self.origin, "must be an Origin")
        if self.context is not None and type(self.context) is not Context:
            raise InvalidEvent("context", self.context, "must be a Context or None")


class Scalar(_Base, frozen=True):
    """One named value at one step: `Scalar("train/loss", 0.31, step=10)`."""

    name: str
    value: float
    step: int

    def __post_init__(self) -> None:  # the hot path of MetricLogger.scalar: checks inline
        name = self.name
        if type(name) is not str or name not in known_names:
            as_name(name)
        if type(self.value) is not float:
            force_setattr(self, "value", as_value(self.value))
        step = self.step
        if type(step) is not int or step < 0 or step > MAX_STEP:
            force_setattr(self, "step", as_step(step))
        wall_time = self.wall_time  # NaN fails `>=`: `or`-chained single comparisons are the cheapest test
        if (
            type(wall_time) is not float
            or not wall_time >= 0.0
            or wall_time > MAX_WALL_TIME
            or type(self.origin) is not Origin
            or self.context is not None
        ):
            self._check_base()


class Metrics(_Base, frozen=True):
    """Many named values at one step: the unit of `wandb.log` and Lightning's `log_metrics`."""

    values: dict[str, float]
    step: int

    def __post_init__(self) -> None:
        force_setattr(self, "values", as_values(self.values))
        step = self.step
        if type(step) is not int or step < 0 or step > MAX_STEP:
            force_setattr(self, "step", as_step(step))
        wall_time = self.wall_time  # NaN fails `>=`: `or`-chained single comparisons are the cheapest test
        if (
            type(wall_time) is not float
            or not wall_time >= 0.0
            or wall_time > MAX_WALL_TIME
            or type(self.origin) is not Origin
            or self.context is not None
        ):
            self._check_base()


class Histogram(_Base, frozen=True):
    """A distribution at one step: raw `values`, or precomputed `bucket_limits` (right edges) with
    `bucket_counts`. Sinks bin raw values themselves, off the training thread."""

    name: str
    step: int
    values: tuple[float, ...] | None = None
    bucket_limits: tuple[float, ...] | None = None
    bucket_counts: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        as_name(self.name)
        force_setattr(self, "step", as_step(self.step))
        has_values = self.values is not None
        has_bins = self.bucket_limits is not None or self.bucket_counts is not None
        if has_values == has_bins:
            raise InvalidEvent("values", self.values, "give either values or bucket_limits with bucket_counts")
        if has_values:
            values = as_float_list(self.values, "values")
            if not values:
                raise InvalidEvent("values", self.values, "must not be empty")
            force_setattr(self, "values", values)
        else:
            limits = as_float_list(self.bucket_limits, "bucket_limits")
            counts = as_float_list(self.bucket_counts, "bucket_counts")
            if not limits or len(limits) != len(counts):
                raise InvalidEvent("bucket_counts", self.bucket_counts, "needs one count per bucket limit")
            if math.isnan(limits[0]) or any(not b > a for a, b in pairwise(limits)):  # NaN is not ordered
                raise InvalidEvent("bucket_limits", self.bucket_limits, "must be strictly increasing, without NaN")
            if any(not 0.0 <= c < math.inf for c in counts):
                raise InvalidEvent("bucket_counts", self.bucket_counts, "must be finite numbers >= 0")
            force_setattr(self, "bucket_limits", limits)
            force_setattr(self, "bucket_counts", counts)
        self._check_base()


class Text(_Base, frozen=True):
    """A piece of text at one step (a sample, a note, a config dump)."""

    name: str
    text: str
    step: int

    def __post_init__(self) -> None:
        as_name(self.name)
        as_text(self.text)
        force_setattr(self, "step", as_step(self.step))
        self._check_base()


class Hparams(_Base, frozen=True):
    """The run's hyperparameters, optionally with the metrics they produced."""

    params: dict[str, str | float | int | bool]
    metrics: dict[str, float] = {}
    step: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.params, dict):
            raise InvalidEvent("params", self.params, "must be a dict of names to str/int/float/bool")
        params = {as_name(k, "params key"): as_param(v, f"params[{k!r}]") for k, v in self.params.items()}
        force_setattr(self, "params", params)
        force_setattr(self, "metrics", as_values(self.metrics, "metrics"))
        force_setattr(self, "step", as_step(self.step))
        self._check_base()


class _Named(_Base, frozen=True):
    """A name and a step, positional, before the keyword-only fields of a subclass."""

    name: str
    step: int


class Image(_Named, frozen=True, kw_only=True):
    """An image at one step: `pixels` are raw uint8 values, `height` rows of `width` pixels of
    `channels` bytes each (1 grayscale, 3 RGB, 4 RGBA), row-major HWC, at most 64 MiB.

    Raw, not PNG: building one costs the caller a copy of the pixels, and each sink encodes them
    as its format needs (TensorBoard and W&B: PNG), on the sink's own thread or worker process.
    `SummaryWriter.add_image` converts arrays and tensors of other layouts and dtypes into this.

    `sequence`: the name of a list of images this one belongs to (`wandb.log({"samples": [a,
    b]})` makes `samples/0` and `samples/1` with sequence "samples"): the W&B sink logs them as
    one list under that name, as wandb does; other sinks write each under its own name.
    """

    pixels: bytes
    height: int
    width: int
    channels: int
    sequence: str | None = None

    def __post_init__(self) -> None:
        as_name(self.name)
        if self.sequence is not None:
            as_name(self.sequence, "sequence")
        force_setattr(self, "step", as_step(self.step))
        pixels = as_pixels(self.pixels)
        force_setattr(self, "pixels", pixels)
        height, width, channels = as_image_shape(pixels, self.height, self.width, self.channels)
        force_setattr(self, "height", height)
        force_setattr(self, "width", width)
        force_setattr(self, "channels", channels)
        self._check_base()

    def __repr__(self) -> str:
        """The pixels as their size: a repr in a log or a failed test should not hold megabytes."""
        return (
            f"Image(name={self.name!r}, step={self.step}, pixels=<{len(self.pixels)} bytes>, height={self.height},"
            f" width={self.width}, channels={self.channels}, wall_time={self.wall_time!r}, origin={self.origin!r},"
            f" context={self.context!r})"
        )


ChartKind: TypeAlias = Literal["Multiline", "Margin"]
_MARGIN_TAGS = 3  # a margin chart's value, lower and upper series


def _as_layout(value: object) -> dict[str, dict[str, tuple[ChartKind, tuple[str, ...]]]]:
    """A validated copy of a custom-scalars layout, with each chart as a (kind, tags) tuple."""
    if not isinstance(value, Mapping):
        raise InvalidEvent("layout", value, "must be a mapping of categories to {chart title: (kind, tags)}")
    try:
        layout: dict[str, dict[str, tuple[ChartKind, tuple[str, ...]]]] = {}
        for category, charts in value.items():
            as_name(category, "layout key")
            if not isinstance(charts, Mapping):
                raise InvalidEvent(f"layout[{category!r}]", charts, "must be a mapping of chart titles to (kind, tags)")
            layout[category] = {}
            for title, chart in charts.items():
                field = f"layout[{category!r}][{title!r}]"
                as_name(title, f"layout[{category!r}] key")
                layout[category][title] = _as_chart(chart, field)
        return layout
    except InvalidEvent:
        raise
    except Exception as exc:
        raise InvalidEvent("layout", value, f"cannot be read as a layout ({type(exc).__name__})") from exc


def _as_chart(chart: object, field: str) -> tuple[ChartKind, tuple[str, ...]]:
    if isinstance(chart, (str, bytes)) or not isinstance(chart, (list, tuple)) or len(chart) != 2:
        raise InvalidEvent(field, chart, "must be a (kind, tags) pair: ('Multiline', [tags]) or ('Margin', [3 tags])")
    kind, tags = chart
    if type(kind) is not str or kind not in ("Multiline", "Margin"):
        raise InvalidEvent(f"{field}[0]", kind, "must be 'Multiline' or 'Margin'")
    if isinstance(tags, (str, bytes)) or not isinstance(tags, (list, tuple)) or not tags:
        raise InvalidEvent(f"{field}[1]", tags, "must be a non-empty list of tags")
    names = tuple(as_name(tag, f"{field}[1][{i}]") for i, tag in enumerate(tags))
    if kind == "Multiline":
        return "Multiline", names
    if len(names) != _MARGIN_TAGS:
        raise InvalidEvent(f"{field}[1]", tags, "a Margin chart takes 3 tags: value, lower, upper")
    return "Margin", names


class ChartLayout(_Base, frozen=True):
    """TensorBoard's CUSTOM SCALARS layout, in tensorboardX's shape: `{category: {chart title:
    (kind, tags)}}`, kind "Multiline" (tags are regular expressions of scalar tags, drawn on one
    chart) or "Margin" (three tags: value, lower and upper bound).

    A one-off record of how to draw the scalars, not a measurement: the TensorBoard sink writes
    it (TensorBoard shows a run's latest layout) and JSONL keeps it; the sinks that take only
    measurements (CSV, console, W&B, per-metric callbacks) declare so in `accepts` and are not
    sent it.
    """

    layout: dict[str, dict[str, tuple[ChartKind, tuple[str, ...]]]]
    step: int = 0

    def __post_init__(self) -> None:
        force_setattr(self, "layout", _as_layout(self.layout))
        force_setattr(self, "step", as_step(self.step))
        self._check_base()


# ==== SummaryWriter media and one-off records: audio, video, PR curves, meshes, embeddings, graphs ====
# Raw data, as in Image: the caller pays one copy, each sink encodes what it needs (WAV, GIF,
# protobufs, projector files) on its own thread or worker. Kept in one block, after the core kinds.

_MAX_BYTE_RATE = 2**32 - 1  # a WAV header's bytes-a-second field


class Audio(_Named, frozen=True, kw_only=True):
    """A sound clip at one step: `samples` are 16-bit signed little-endian PCM frames of
    `channels` interleaved samples (1 mono, 2 stereo), `sample_rate` frames a second, at most
    64 MiB. `SummaryWriter.add_audio` converts floats in [-1, 1] as tensorboardX does; sinks wrap
    the samples in a WAV file (TensorBoard's audio tab, `wandb.Audio`, an MLflow artifact).
    `sequence`: as for `Image`, the name of a list of clips logged as one (W&B)."""

    samples: bytes
    channels: int = 1
    sample_rate: int = 44100
    sequence: str | None = None

    def __post_init__(self) -> None:
        as_name(self.name)
        if self.sequence is not None:
            as_name(self.sequence, "sequence")
        force_setattr(self, "step", as_step(self.step))
        channels = as_choice(self.channels, "channels", AUDIO_CHANNELS)
        force_setattr(self, "channels", channels)
        rate = as_size(self.sample_rate, "sample_rate")
        if rate * 2 * channels > _MAX_BYTE_RATE:
            raise InvalidEvent(
                "sample_rate", self.sample_rate, f"times 2 bytes x channels must be at most {_MAX_BYTE_RATE}"
            )
        force_setattr(self, "sample_rate", rate)
        samples = as_pixels(self.samples, "samples")
        frame = 2 * channels
        if not samples or len(samples) % frame:
            raise InvalidEvent("samples", samples, f"must be whole frames of {frame} bytes, at least one")
        force_setattr(self, "samples", as_blob(samples, "samples", frame, len(samples) // frame))
        self._check_base()

    @property
    def frames(self) -> int:
        return len(self.samples) // (2 * self.channels)

    def __repr__(self) -> str:
        return (
            f"Audio(name={self.name!r}, step={self.step}, samples=<{len(self.samples)} bytes>,"
            f" channels={self.channels}, sample_rate={self.sample_rate}, wall_time={self.wall_time!r},"
            f" origin={self.origin!r}, context={self.context!r})"
        )


class Video(_Named, frozen=True, kw_only=True):
    """A clip of `length` frames at one step: `frames` are raw uint8 THWC values (`channels` 1
    or 3), shown at `fps` frames a second, at most 64 MiB. `SummaryWriter.add_video` lays a
    batch of clips out as tensorboardX does; sinks encode it (TensorBoard: an animated GIF)."""

    frames: bytes
    length: int
    height: int
    width: int
    channels: int = 3
    fps: float = 4.0

    def __post_init__(self) -> None:
        as_name(self.name)
        force_setattr(self, "step", as_step(self.step))
        length, height, width = (
            as_size(self.length, "length"),
            as_size(self.height, "height"),
            as_size(self.width, "width"),
        )
        channels = as_choice(self.channels, "channels", VIDEO_CHANNELS)
        force_setattr(self, "frames", as_blob(self.frames, "frames", channels, length * height * width))
        force_setattr(self, "length", length)
        force_setattr(self, "height", height)
        force_setattr(self, "width", width)
        force_setattr(self, "channels", channels)
        force_setattr(self, "fps", as_fps(self.fps, "fps"))
        self._check_base()

    def __repr__(self) -> str:
        return (
            f"Video(name={self.name!r}, step={self.step}, frames=<{len(self.frames)} bytes>, length={self.length},"
            f" height={self.height}, width={self.width}, channels={self.channels}, fps={self.fps!r},"
            f" wall_time={self.wall_time!r}, origin={self.origin!r}, context={self.context!r})"
        )


class PrCurve(_Named, frozen=True, kw_only=True):
    """A precision-recall curve at one step, as TensorBoard's PR CURVES tab reads it: six series
    of one length, one point per threshold (tensorboardX's `pr_curve_raw`). `num_thresholds` is
    what the tab is told (1-127). `SummaryWriter.add_pr_curve` computes the series from labels
    and predictions, so the event is small whatever the number of predictions."""

    true_positives: tuple[float, ...]
    false_positives: tuple[float, ...]
    true_negatives: tuple[float, ...]
    false_negatives: tuple[float, ...]
    precision: tuple[float, ...]
    recall: tuple[float, ...]
    num_thresholds: int = MAX_PR_THRESHOLDS

    def __post_init__(self) -> None:
        as_name(self.name)
        force_setattr(self, "step", as_step(self.step))
        length: int | None = None
        for field in ("true_positives", "false_positives", "true_negatives", "false_negatives", "precision", "recall"):
            curve = as_curve(getattr(self, field), field, length)
            length = len(curve)
            force_setattr(self, field, curve)
        thresholds = as_size(self.num_thresholds, "num_thresholds")
        if thresholds > MAX_PR_THRESHOLDS:
            raise InvalidEvent("num_thresholds", self.num_thresholds, f"must be at most {MAX_PR_THRESHOLDS}")
        force_setattr(self, "num_thresholds", thresholds)
        self._check_base()


class Mesh(_Named, frozen=True, kw_only=True):
    """A 3-d mesh or point cloud at one step (TensorBoard's MESH tab): `vertices`, and optionally
    vertex `colors` (0-255) and triangle `faces` (vertex indices), each float32 little-endian
    bytes of its (batch, items, 3) shape; `config` is the three.js configuration as JSON."""

    vertices: bytes
    vertices_shape: tuple[int, int, int]
    colors: bytes | None = None
    colors_shape: tuple[int, int, int] | None = None
    faces: bytes | None = None
    faces_shape: tuple[int, int, int] | None = None
    config: str = "null"

    def __post_init__(self) -> None:
        as_name(self.name)
        force_setattr(self, "step", as_step(self.step))
        for field in ("vertices", "colors", "faces"):
            data, shape = getattr(self, field), getattr(self, f"{field}_shape")
            if field != "vertices" and data is None and shape is None:
                continue
            checked = as_shape3(shape, f"{field}_shape")
            force_setattr(self, f"{field}_shape", checked)
            force_setattr(self, field, as_blob(data, field, 4, checked[0] * checked[1] * 3))
        force_setattr(self, "config", as_json(self.config, "config"))
        self._check_base()

    def __repr__(self) -> str:
        sizes = ", ".join(f"{f}=<{len(getattr(self, f) or b'')} bytes>" for f in ("vertices", "colors", "faces"))
        return f"Mesh(name={self.name!r}, step={self.step}, {sizes}, config={self.config!r}, origin={self.origin!r})"


class Embedding(_Named, frozen=True, kw_only=True):
    """Points for TensorBoard's PROJECTOR at one step: `values`, `rows` x `dims` float64
    little-endian (row-major); optional `metadata`, one TSV line per point (with a
    `metadata_header` line when there are several columns); optional label images, `rows` squares
    of `label_size` pixels, uint8 NHWC with `label_channels` 1 or 3. The TensorBoard sink writes
    them as tensorboardX's add_embedding does: files beside the run's event files."""

    values: bytes
    rows: int
    dims: int
    metadata: tuple[str, ...] | None = None
    metadata_header: str | None = None
    label_pixels: bytes | None = None
    label_size: int = 0
    label_channels: int = 0

    def __post_init__(self) -> None:
        as_projector_name(as_name(self.name))
        force_setattr(self, "step", as_step(self.step))
        rows, dims = as_size(self.rows, "rows"), as_size(self.dims, "dims")
        force_setattr(self, "rows", rows)
        force_setattr(self, "dims", dims)
        force_setattr(self, "values", as_blob(self.values, "values", 8, rows * dims))
        if self.metadata is not None:
            metadata = as_lines(self.metadata, "metadata")
            if len(metadata) != rows:
                raise InvalidEvent("metadata", self.metadata, f"has {len(metadata)} lines for {rows} points")
            force_setattr(self, "metadata", metadata)
        if self.metadata_header is not None:
            if self.metadata is None:
                raise InvalidEvent("metadata_header", self.metadata_header, "needs metadata")
            force_setattr(self, "metadata_header", as_lines([self.metadata_header], "metadata_header")[0])
        if self.label_pixels is None:
            if self.label_size or self.label_channels:
                raise InvalidEvent("label_pixels", None, "label_size and label_channels need label_pixels")
        else:
            size = as_size(self.label_size, "label_size")
            as_sprite(rows, size, "label_size")
            channels = as_choice(self.label_channels, "label_channels", SPRITE_CHANNELS)
            force_setattr(self, "label_size", size)
            force_setattr(self, "label_channels", channels)
            force_setattr(
                self, "label_pixels", as_blob(self.label_pixels, "label_pixels", channels, rows * size * size)
            )
        self._check_base()

    def __repr__(self) -> str:
        return (
            f"Embedding(name={self.name!r}, step={self.step}, rows={self.rows}, dims={self.dims},"
            f" metadata={'no' if self.metadata is None else len(self.metadata)} lines,"
            f" label_pixels=<{len(self.label_pixels or b'')} bytes>, origin={self.origin!r})"
        )


class Graph(_Base, frozen=True):
    """A model's graph for TensorBoard's GRAPHS tab: a serialized TensorFlow `GraphDef`, and
    optionally a serialized `RunMetadata` (shown as the run's 'profiler' metadata). Built where
    the model lives (`SummaryWriter.add_graph` traces it on the calling thread)."""

    graph_def: bytes
    run_metadata: bytes = b""
    step: int = 0

    def __post_init__(self) -> None:
        graph_def = as_pixels(self.graph_def, "graph_def")
        if not graph_def:
            raise InvalidEvent("graph_def", graph_def, "must not be empty")
        force_setattr(self, "graph_def", as_blob(graph_def, "graph_def", 1, len(graph_def)))
        metadata = as_pixels(self.run_metadata, "run_metadata")
        force_setattr(self, "run_metadata", as_blob(metadata, "run_metadata", 1, len(metadata)))
        force_setattr(self, "step", as_step(self.step))
        self._check_base()

    def __repr__(self) -> str:
        return (
            f"Graph(graph_def=<{len(self.graph_def)} bytes>, run_metadata=<{len(self.run_metadata)} bytes>,"
            f" step={self.step}, origin={self.origin!r})"
        )


class Tensor(_Named, frozen=True, kw_only=True):
    """A whole tensor at one step, as torch's `SummaryWriter.add_tensor` records it: `data` holds
    its values as raw little-endian bytes, row-major, of one of `TENSOR_DTYPES` ("float32",
    "bfloat16", "bool", "complex64", ...), `shape` its sizes (`()`: one value), at most 64 MiB.
    bfloat16 values are their 2-byte patterns; bools are the bytes 0 and 1.

    The TensorBoard sink writes torch's tensor summary (plugin "tensor", a TensorProto of that
    dtype and shape); JSONL keeps it; the sinks that show only metrics and media do not take it.
    """

    data: bytes
    dtype: str
    shape: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        as_name(self.name)
        force_setattr(self, "step", as_step(self.step))
        dtype = as_tensor_dtype(self.dtype, "dtype")
        shape = as_tensor_shape(self.shape, "shape")
        force_setattr(self, "shape", shape)
        data = as_blob(self.data, "data", TENSOR_DTYPES[dtype], math.prod(shape))
        if dtype == "bool" and data.translate(None, b"\x00\x01"):
            raise InvalidEvent("data", data, "a bool tensor's bytes must be 0 or 1")
        force_setattr(self, "data", data)
        self._check_base()

    def __repr__(self) -> str:
        return (
            f"Tensor(name={self.name!r}, step={self.step}, data=<{len(self.data)} bytes>, dtype={self.dtype!r},"
            f" shape={self.shape!r}, wall_time={self.wall_time!r}, origin={self.origin!r}, context={self.context!r})"
        )


# ==== the union: every kind above ====


# ---- a run's record besides its time series (W&B's run.config and run.summary) ----
# Hparams holds flat scalars, which TensorBoard's HPARAMS tab and MLflow's params need. A W&B
# script's config and summary hold any JSON value (nested dicts, lists, None), and a summary is
# not a point of a series: these two events carry them as they are, for the W&B sink (which sets
# them on the run exactly) and for the sinks that keep every event (JSONL, memory, your own).

_JSON_DEPTH = 64  # nesting beyond this is refused: no recursion limit reached inside a sink


def _as_json(value: object, field: str, depth: int = 0) -> object:
    """A JSON value (None, bool, int64, float incl. NaN/inf, str, lists and str-keyed dicts of
    them), lists and dicts copied, tuples as lists; anything else is InvalidEvent."""
    kind = type(value)
    if value is None or kind is bool or kind is float:
        return value
    if kind is int:
        if not -(2**63) <= value < 2**63:  # type: ignore[operator]  # kind is int
            raise InvalidEvent(field, value, "is beyond int64")
        return value
    if kind is str:
        return as_text(value, field)
    if depth >= _JSON_DEPTH:
        raise InvalidEvent(field, value, f"nests deeper than {_JSON_DEPTH} levels")
    if isinstance(value, (list, tuple)) and kind in (list, tuple):
        return [_as_json(v, f"{field}[{i}]", depth + 1) for i, v in enumerate(value)]
    if isinstance(value, dict) and kind is dict:
        return {as_name(k, f"{field} key"): _as_json(v, f"{field}[{k!r}]", depth + 1) for k, v in value.items()}
    raise InvalidEvent(field, value, f"must be None, bool, int, float, str, a list or a dict, not {kind.__name__}")


def _as_json_dict(value: object, field: str) -> dict[str, Any]:
    if type(value) is not dict:
        raise InvalidEvent(field, value, "must be a dict of names to JSON values")
    return _as_json(value, field)  # type: ignore[return-value]


class _RunValues(_Base, frozen=True):
    """`{key: any JSON value}` at a step: the fields and checks of RunConfig and RunSummary."""

    values: dict[str, Any]
    step: int = 0

    def __post_init__(self) -> None:
        force_setattr(self, "values", _as_json_dict(self.values, "values"))
        force_setattr(self, "step", as_step(self.step))
        self._check_base()


class RunConfig(_RunValues, frozen=True):
    """Updates to a run's configuration, as W&B keeps it: `{key: any JSON value}` (nested dicts,
    lists and None included; Hparams is the flat, scalar form). The W&B sink applies them to the
    run's config; sinks that take only measurements are not sent them."""


class RunSummary(_RunValues, frozen=True):
    """Values that describe a run as a whole (W&B's `run.summary[key] = value`): the best score,
    a count, a note, as `{key: any JSON value}`. Not a point of a series: the W&B sink sets them
    in the run's summary; sinks that take only measurements are not sent them."""


Event: TypeAlias = (
    Scalar
    | Metrics
    | Histogram
    | Text
    | Hparams
    | Image
    | ChartLayout
    | Audio
    | Video
    | PrCurve
    | Mesh
    | Embedding
    | Graph
    | Tensor
    | RunConfig
    | RunSummary
)
EVENT_TYPES: tuple[type[Event], ...] = (
    *(Scalar, Metrics, Histogram, Text, Hparams, Image, ChartLayout),
    *(Audio, Video, PrCurve, Mesh, Embedding, Graph, Tensor),
    *(RunConfig, RunSummary),
)
