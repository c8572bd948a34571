"""Property-based fuzzing of event construction and of every built-in sink (W&B aside: too slow).

Hostile inputs either build an event or raise InvalidEvent, never anything else. Every accepted
event then goes through a real MetricBus to every built-in sink (in-process, and the file sinks
also in worker processes) and is read back with its format's own reader: it must be there
exactly, and no sink may fail, drop anything or leave its counters unbalanced.
"""

from __future__ import annotations

import csv
import io
import json
import math
import tempfile
import wave
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import anyio
import hypothesis.extra.numpy as npst
import hypothesis.strategies as st
import msgspec
import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from PIL import Image as PILImage
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2
from tensorboardX.summary import custom_scalars
from torch.utils.tensorboard.summary import tensor_proto

from bus import (
    DEFAULT_ORIGIN,
    TENSOR_DTYPES,
    Audio,
    ChartLayout,
    Context,
    Embedding,
    Event,
    Graph,
    Histogram,
    Hparams,
    Image,
    InvalidEvent,
    Mesh,
    MetricBus,
    Metrics,
    Origin,
    PrCurve,
    Scalar,
    SinkState,
    Tensor,
    Text,
    Video,
)
from sinks import CallbackSink, CsvSink, JsonlSink, MemorySink, TensorBoardSink, read_jsonl
from tests.helpers import normalized

# ---- inputs: legal but awkward, and hostile ----

ODD_CHARS = ["\n", "\r", ",", '"', "'", "\\", "\t", " ", "/", "ü", "λ", "😀", "\u2028", "\ufeff", "\x7f", "%", "\x01"]
legal_chars = st.one_of(st.sampled_from(ODD_CHARS), st.characters(exclude_characters="\x00"))
hostile_chars = st.one_of(legal_chars, st.just("\x00"), st.characters(categories=["Cs"]))  # Cs: lone surrogates
ODD_NAMES = ["step", "wall_time", "origin", "value", "null", "NaN", "Infinity", "a" * 1_024]
names = st.one_of(st.text(legal_chars, min_size=1, max_size=12), st.sampled_from(ODD_NAMES))
hostile_names = st.one_of(st.text(hostile_chars, max_size=12), st.sampled_from(["", "a" * 1_025]))
texts = st.one_of(st.text(st.one_of(legal_chars, st.just("\x00")), max_size=40), names)
hostile_texts = st.one_of(st.text(hostile_chars, max_size=12), st.just("a" * 1_000_001))

floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True),
    st.sampled_from([-0.0, 5e-324, -5e-324, 1.7976931348623157e308, 3.4028235e38, 3.4028236e38, 1e-45, 7e-46]),
)
ints = st.one_of(st.integers(min_value=-(2**63), max_value=2**63 - 1), st.sampled_from([2**53 + 1, 10**308]))
hostile_ints = st.one_of(st.integers(), st.sampled_from([2**63, 2**64, -(2**63) - 1, 10**309, 10**400]))
SHAPES = [(), (1,), (1, 1), (2,), (0,), (2, 3)]
ONE = [(), (1,), (1, 1)]
real_dtypes = st.one_of(npst.integer_dtypes(), npst.unsigned_integer_dtypes(), npst.floating_dtypes())
any_dtype = st.one_of(npst.scalar_dtypes(), npst.unicode_string_dtypes(max_len=3), npst.byte_string_dtypes(max_len=3))
TORCH_REAL = [np.uint8, np.int8, np.int16, np.int32, np.int64, np.float16, np.float32, np.float64]
TORCH_OTHER = [np.bool_, np.complex64, np.complex128]


def numpy_values(dtypes: st.SearchStrategy[Any], shapes: list[tuple[int, ...]]) -> st.SearchStrategy[Any]:
    """numpy arrays of these dtypes and shapes, and the numpy scalars of these dtypes."""
    return st.one_of(npst.arrays(dtypes, st.sampled_from(shapes)), npst.arrays(dtypes, ()).map(lambda a: a[()]))


def tensors(dtypes: list[Any], shapes: list[tuple[int, ...]]) -> st.SearchStrategy[Any]:
    return npst.arrays(st.sampled_from(dtypes), st.sampled_from(shapes)).map(torch.from_numpy)


bfloat16 = npst.arrays(np.float32, st.sampled_from(ONE)).map(lambda a: torch.from_numpy(a).to(torch.bfloat16))
values = st.one_of(floats, floats, ints, numpy_values(real_dtypes, ONE), tensors(TORCH_REAL, ONE), bfloat16)
junk = st.one_of(
    st.none(),
    st.booleans(),
    st.complex_numbers(allow_nan=True, allow_infinity=True),
    st.binary(max_size=3),
    hostile_texts,
    st.lists(floats, max_size=2),
    st.lists(st.lists(floats, max_size=2), max_size=2),
    st.builds(object),
)
hostile_values = st.one_of(
    hostile_ints, numpy_values(any_dtype, SHAPES), tensors(TORCH_REAL + TORCH_OTHER, SHAPES), junk
)
steps = st.one_of(
    st.integers(min_value=0, max_value=2**63 - 1),
    st.sampled_from([0, 1, 127, 128, 2**31, 2**63 - 1]),
    st.integers(min_value=0, max_value=2**31).map(np.int64),
    st.integers(min_value=0, max_value=2**31).map(lambda i: torch.tensor([i])),
)
hostile_steps = st.one_of(st.sampled_from([2**63, 2**64 + 1, -1]), hostile_ints, values, hostile_values)
wall_times = st.one_of(
    st.none(), st.floats(min_value=0.0, max_value=4e9), st.sampled_from([0.0, 5e-324, 1.7e308]), st.integers(0, 2**40)
)
hostile_wall_times = st.one_of(st.sampled_from([-1.0, math.nan, math.inf, -math.inf]), hostile_values)
histogram_data = st.one_of(
    st.fixed_dictionaries({"values": st.lists(values, min_size=1, max_size=8)}),
    st.fixed_dictionaries({"values": npst.arrays(real_dtypes, st.sampled_from([(1,), (3,), (2, 3)]))}),
    st.lists(st.floats(allow_nan=False), min_size=1, max_size=5, unique=True).flatmap(
        lambda limits: st.fixed_dictionaries(
            {
                "bucket_limits": st.just(sorted(limits)),
                "bucket_counts": st.lists(st.floats(0, 1e6), min_size=len(limits), max_size=len(limits)),
            }
        )
    ),
)
hostile_sequences = st.one_of(st.lists(hostile_values, min_size=1, max_size=3), hostile_values, st.just([]))
hostile_histogram_data = st.one_of(
    st.fixed_dictionaries({"values": hostile_sequences}),
    st.fixed_dictionaries(
        {"bucket_limits": st.lists(floats, max_size=3), "bucket_counts": st.lists(floats, max_size=3)}
    ),
    st.fixed_dictionaries({"values": hostile_sequences, "bucket_limits": hostile_sequences}),
    st.just({}),
)


def image_data(height: int, width: int, channels: int) -> st.SearchStrategy[dict[str, Any]]:
    """Pixels of exactly height x width x channels bytes (bytes, bytearray or memoryview), with the
    dimensions as ints or numpy integers."""
    size = height * width * channels
    pixels = st.binary(min_size=size, max_size=size)
    return st.fixed_dictionaries(
        {
            "pixels": st.one_of(pixels, pixels.map(bytearray), pixels.map(memoryview)),
            "height": st.sampled_from([height, np.int64(height)]),
            "width": st.sampled_from([width, np.uint16(width)]),
            "channels": st.sampled_from([channels, torch.tensor([channels])]),
        }
    )


images = st.tuples(st.integers(1, 5), st.integers(1, 5), st.sampled_from([1, 3, 4])).flatmap(lambda s: image_data(*s))
hostile_images = st.one_of(
    st.fixed_dictionaries(
        {
            "pixels": st.one_of(st.binary(max_size=8), junk, npst.arrays(np.uint8, (3,))),
            "height": st.one_of(st.just(1), hostile_steps),
            "width": st.one_of(st.just(1), hostile_steps),
            "channels": st.one_of(st.sampled_from([0, 2, 5, 3]), hostile_steps),
        }
    ),
    st.just({"pixels": b"", "height": 4096, "width": 4096, "channels": 5}),
    st.just({"pixels": b"", "height": 4097, "width": 4096, "channels": 4}),  # beyond 64 MiB
)
charts = st.one_of(
    st.tuples(st.just("Multiline"), st.lists(names, min_size=1, max_size=3)),
    st.tuples(st.just("Margin"), st.lists(names, min_size=3, max_size=3)),
)
layouts = st.dictionaries(names, st.dictionaries(names, charts, max_size=3), max_size=3)
hostile_charts = st.one_of(
    junk,
    st.tuples(st.one_of(hostile_texts, st.sampled_from(["multiline", "Margin"])), st.lists(names, max_size=4)),
    st.tuples(st.just("Multiline"), st.one_of(st.lists(hostile_names, min_size=1, max_size=2), junk)),
)
hostile_layouts = st.one_of(
    junk,
    st.dictionaries(hostile_names, st.dictionaries(names, charts, max_size=1), min_size=1, max_size=2),
    st.dictionaries(names, st.one_of(junk, st.dictionaries(hostile_names, charts, min_size=1)), min_size=1),
    st.dictionaries(names, st.dictionaries(names, hostile_charts, min_size=1), min_size=1, max_size=2),
)
params = st.one_of(values, texts, st.booleans(), st.none(), st.lists(ints, max_size=2), numpy_values(any_dtype, SHAPES))
hostile_params = st.one_of(hostile_ints, hostile_texts, tensors(TORCH_OTHER, SHAPES))
contexts: st.SearchStrategy[dict[str, Any] | None] = st.one_of(
    st.none(),
    st.builds(
        dict, epoch=st.one_of(st.none(), steps), round=st.one_of(st.none(), steps), task=st.one_of(st.none(), names)
    ),
)
hostile_contexts: st.SearchStrategy[dict[str, Any]] = st.one_of(
    st.builds(dict, epoch=hostile_steps), st.builds(dict, round=hostile_steps), st.builds(dict, task=hostile_names)
)
# Origins whose names once shared a label (site-1 and node site-1, the default and site main).
ORIGINS = [
    DEFAULT_ORIGIN,
    Origin(site="site-1"),
    Origin(node="site-1"),
    Origin(site="main"),
    Origin(site="site-1", rank=2**63 - 1),
    Origin(node="n.2", rank=0),
]
identifiers = st.from_regex(r"[A-Za-z0-9_.\-]{1,8}", fullmatch=True)
hostile_origins: st.SearchStrategy[dict[str, Any]] = st.one_of(
    st.builds(dict, site=st.one_of(hostile_names, junk), node=identifiers),
    st.builds(dict, node=st.one_of(hostile_names, st.just(".."))),
    st.builds(dict, rank=hostile_steps),
)


# ---- the media kinds: raw bytes whose layout the other fields give ----


def sized(size: int) -> st.SearchStrategy[Any]:
    """Exactly `size` bytes, as bytes, bytearray or memoryview."""
    data = st.binary(min_size=size, max_size=size)
    return st.one_of(data, data.map(bytearray), data.map(memoryview))


audios = st.tuples(st.sampled_from([1, 2]), st.integers(1, 6)).flatmap(
    lambda s: st.fixed_dictionaries(
        {
            "samples": sized(2 * s[0] * s[1]),
            "channels": st.sampled_from([s[0], np.int8(s[0])]),
            "sample_rate": st.sampled_from([1, 8000, 44100, (2**32 - 1) // (2 * s[0])]),
        }
    )
)
hostile_audios = st.one_of(
    st.fixed_dictionaries({"samples": st.one_of(st.binary(max_size=5), junk), "channels": st.sampled_from([1, 2])}),
    st.fixed_dictionaries(
        {"samples": st.just(b"\x00" * 12), "channels": st.one_of(st.sampled_from([0, 3]), hostile_steps)}
    ),
    st.fixed_dictionaries({"samples": st.just(b"\x00\x00"), "sample_rate": st.sampled_from([0, 2**31, -1, 1.5])}),
)
videos = st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 4), st.sampled_from([1, 3])).flatmap(
    lambda s: st.fixed_dictionaries(
        {
            "frames": sized(s[0] * s[1] * s[2] * s[3]),
            "length": st.just(s[0]),
            "height": st.just(s[1]),
            "width": st.just(s[2]),
            "channels": st.just(s[3]),
            "fps": st.one_of(st.floats(1 / 200, 1e300), st.sampled_from([4, 1 / 200, 30.0])),
        }
    )
)
hostile_videos = st.one_of(
    st.fixed_dictionaries(
        {"frames": st.binary(max_size=13), "length": st.just(1), "height": st.just(2), "width": st.just(2)}
    ),
    st.fixed_dictionaries(
        {
            "frames": st.just(bytes(16)),
            "length": st.just(1),
            "height": st.just(2),
            "width": st.just(2),
            "channels": st.one_of(st.sampled_from([2, 4]), hostile_steps),
        }
    ),
    st.fixed_dictionaries(
        {
            "frames": st.just(bytes(12)),
            "length": st.just(1),
            "height": st.just(2),
            "width": st.just(2),
            "fps": st.one_of(st.sampled_from([0.0, 1e-3, math.nan, math.inf]), hostile_values),
        }
    ),
)
CURVES = ("true_positives", "false_positives", "true_negatives", "false_negatives", "precision", "recall")
pr_curves = st.integers(1, 5).flatmap(
    lambda n: st.fixed_dictionaries(
        {
            **{name: st.lists(floats, min_size=n, max_size=n) for name in CURVES},
            "num_thresholds": st.integers(1, 127),
        }
    )
)
hostile_pr_curves = st.one_of(
    st.fixed_dictionaries({name: st.lists(floats, min_size=1, max_size=3) for name in CURVES}),  # lengths differ
    st.fixed_dictionaries({name: st.just([1.0]) for name in CURVES}).map(lambda d: {**d, "num_thresholds": 128}),
    st.fixed_dictionaries({name: hostile_sequences for name in CURVES}),
)


def mesh_tensor(name: str) -> st.SearchStrategy[dict[str, Any]]:
    return st.tuples(st.integers(1, 2), st.integers(1, 3)).flatmap(
        lambda s: st.fixed_dictionaries({name: sized(4 * s[0] * s[1] * 3), f"{name}_shape": st.just((s[0], s[1], 3))})
    )


json_texts = st.one_of(
    st.just("null"), st.dictionaries(names, st.one_of(ints, texts, st.booleans()), max_size=3).map(json.dumps)
)
meshes = st.tuples(
    mesh_tensor("vertices"),
    st.one_of(st.just({}), mesh_tensor("colors")),
    st.one_of(st.just({}), mesh_tensor("faces")),
    json_texts,
).map(lambda parts: {**parts[0], **parts[1], **parts[2], "config": parts[3]})
hostile_meshes = st.one_of(
    st.fixed_dictionaries({"vertices": st.binary(max_size=8), "vertices_shape": st.just((1, 1, 3))}),
    st.fixed_dictionaries({"vertices": st.just(bytes(12)), "vertices_shape": st.one_of(junk, st.just((1, 1, 2)))}),
    st.fixed_dictionaries(
        {"vertices": st.just(bytes(12)), "vertices_shape": st.just((1, 1, 3)), "config": hostile_texts}
    ),
)
tsv_lines = st.text(st.characters(exclude_characters="\x00\n\r", exclude_categories=["Cs"]), max_size=8)
embeddings = st.tuples(st.integers(1, 4), st.integers(1, 3), st.integers(1, 3), st.sampled_from([1, 3])).flatmap(
    lambda s: st.fixed_dictionaries(
        {"values": sized(8 * s[0] * s[1]), "rows": st.just(s[0]), "dims": st.just(s[1])},
        optional={
            "metadata": st.lists(tsv_lines, min_size=s[0], max_size=s[0]),
            "label_pixels": sized(s[0] * s[2] * s[2] * s[3]),
        },
    ).map(lambda d: {**d, "label_size": s[2], "label_channels": s[3]} if "label_pixels" in d else d)
)
hostile_embeddings = st.one_of(
    st.fixed_dictionaries({"values": st.binary(max_size=9), "rows": st.just(1), "dims": st.just(1)}),
    st.fixed_dictionaries(
        {"values": st.just(bytes(8)), "rows": st.just(1), "dims": st.just(1), "metadata": st.just(["a", "b"])}
    ),
    st.fixed_dictionaries(
        {"values": st.just(bytes(8)), "rows": st.just(1), "dims": st.just(1), "metadata_header": st.just("h")}
    ),
    st.fixed_dictionaries(
        {
            "values": st.just(bytes(8)),
            "rows": st.just(1),
            "dims": st.just(1),
            "label_pixels": st.just(bytes(8193 * 8193)),
            "label_size": st.just(8193),
            "label_channels": st.just(1),
        }
    ),
)
graphs = st.fixed_dictionaries({"graph_def": st.binary(min_size=1, max_size=20), "run_metadata": st.binary(max_size=8)})
hostile_graphs = st.fixed_dictionaries({"graph_def": st.one_of(st.just(b""), junk)})


def tensor_data(dtype: str, shape: tuple[int, ...]) -> st.SearchStrategy[dict[str, Any]]:
    """A Tensor's fields: any bytes of its size (a bool's are 0 or 1), the shape as a list or a tuple."""
    count = math.prod(shape)
    data = st.lists(st.sampled_from([0, 1]), min_size=count, max_size=count).map(bytes)
    if dtype != "bool":
        data = sized(TENSOR_DTYPES[dtype] * count)
    return st.fixed_dictionaries(
        {"data": data, "dtype": st.just(dtype), "shape": st.sampled_from([shape, list(shape)])}
    )


TENSOR_SHAPES = [(), (0,), (3,), (2, 2), (1, 0, 2), (2, 1, 1, 2)]
tensor_events = st.tuples(st.sampled_from(list(TENSOR_DTYPES)), st.sampled_from(TENSOR_SHAPES)).flatmap(
    lambda s: tensor_data(*s)
)
hostile_tensor_events = st.one_of(
    st.fixed_dictionaries({"data": st.binary(max_size=9), "dtype": st.just("float32"), "shape": st.just((2,))}),
    st.fixed_dictionaries(
        {"data": st.just(bytes(4)), "dtype": st.one_of(st.sampled_from(["uint16", "float", "torch.int32"]), junk)}
    ),
    st.fixed_dictionaries(
        {
            "data": st.just(bytes(4)),
            "dtype": st.just("int32"),
            "shape": st.one_of(junk, st.sampled_from([(-1,), (1,) * 65, (2**62, 2**62), "1"])),
        }
    ),
    st.fixed_dictionaries(
        {"data": st.sampled_from([b"\x02", b"\xff"]), "dtype": st.just("bool"), "shape": st.just((1,))}
    ),
)

Strategies = dict[str, tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]]
"""Per constructor argument: (legal values, hostile values)."""

FIELDS: dict[type[Event], Strategies] = {
    Scalar: {"name": (names, hostile_names), "value": (values, hostile_values), "step": (steps, hostile_steps)},
    Metrics: {
        "values": (
            st.dictionaries(names, values, max_size=4),
            st.dictionaries(hostile_names, hostile_values, min_size=1),
        ),
        "step": (steps, hostile_steps),
    },
    Histogram: {
        "name": (names, hostile_names),
        "step": (steps, hostile_steps),
        "data": (histogram_data, hostile_histogram_data),
    },
    Text: {"name": (names, hostile_names), "text": (texts, hostile_texts), "step": (steps, hostile_steps)},
    Hparams: {
        "params": (
            st.dictionaries(names, params, max_size=4),
            st.dictionaries(hostile_names, hostile_params, min_size=1),
        ),
        "metrics": (
            st.dictionaries(names, values, max_size=3),
            st.dictionaries(hostile_names, hostile_values, min_size=1),
        ),
        "step": (steps, hostile_steps),
    },
    Image: {"name": (names, hostile_names), "step": (steps, hostile_steps), "data": (images, hostile_images)},
    ChartLayout: {"layout": (layouts, hostile_layouts), "step": (steps, hostile_steps)},
    Audio: {"name": (names, hostile_names), "step": (steps, hostile_steps), "data": (audios, hostile_audios)},
    Video: {"name": (names, hostile_names), "step": (steps, hostile_steps), "data": (videos, hostile_videos)},
    PrCurve: {"name": (names, hostile_names), "step": (steps, hostile_steps), "data": (pr_curves, hostile_pr_curves)},
    Mesh: {"name": (names, hostile_names), "step": (steps, hostile_steps), "data": (meshes, hostile_meshes)},
    Embedding: {
        "name": (names, hostile_names),
        "step": (steps, hostile_steps),
        "data": (embeddings, hostile_embeddings),
    },
    Graph: {"step": (steps, hostile_steps), "data": (graphs, hostile_graphs)},
    Tensor: {
        "name": (names, hostile_names),
        "step": (steps, hostile_steps),
        "data": (tensor_events, hostile_tensor_events),
    },
}
COMMON: Strategies = {"wall_time": (wall_times, hostile_wall_times), "context": (contexts, hostile_contexts)}


@dataclass(frozen=True)
class Spec:
    """A call to an event constructor, made (and maybe refused) in the test, not in the strategy."""

    kind: type[Event]
    arguments: dict[str, Any]

    def make(self) -> Event:
        arguments = dict(self.arguments)
        arguments.update(arguments.pop("data", {}))
        if arguments["wall_time"] is None:
            del arguments["wall_time"]  # the default: now
        if isinstance(arguments["origin"], dict):
            arguments["origin"] = Origin(**arguments["origin"])
        if isinstance(arguments["context"], dict):
            arguments["context"] = Context(**arguments["context"])
        return self.kind(**arguments)


@st.composite
def specs(draw: st.DrawFn, hostile_fields: int, hostile_origin: bool) -> Spec:
    """A call to one event constructor with legal but awkward arguments, of which up to
    `hostile_fields` are hostile; the origin is one of ORIGINS unless `hostile_origin`."""
    kind = draw(st.sampled_from(list(FIELDS)))
    fields = {**FIELDS[kind], **COMMON}
    arguments = {name: draw(legal) for name, (legal, _) in fields.items()}
    arguments["origin"] = draw(st.sampled_from(ORIGINS))
    for name in draw(st.lists(st.sampled_from(list(fields)), max_size=hostile_fields, unique=True)):
        arguments[name] = draw(fields[name][1])
    if hostile_origin and draw(st.booleans()):
        arguments["origin"] = draw(hostile_origins)
    return Spec(kind, arguments)


def build(spec: Spec) -> Event | None:
    """The event `spec` describes, or None if a constructor refused it with InvalidEvent."""
    try:
        return spec.make()
    except InvalidEvent:
        return None  # anything else propagates and fails the test


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(specs(hostile_fields=6, hostile_origin=True), min_size=1, max_size=10))
def test_a_hostile_input_builds_an_event_or_raises_invalid_event(calls: list[Spec]) -> None:
    for call in calls:
        build(call)


# ---- the round trip through every sink ----


def same(got: float, expected: float) -> bool:
    """Equal floats, NaN equal to NaN, -0.0 told from 0.0."""
    return repr(float(got)) == repr(float(expected))


def f32(value: float) -> float:
    """What TensorBoard stores: float32, finite values beyond its range become ±inf."""
    with np.errstate(over="ignore"):
        return float(np.float32(value))


def metric_values(events: Sequence[Event]) -> list[tuple[Event, str, float]]:
    """(event, name, value) of every value of the Scalar and Metrics events, in order."""
    out: list[tuple[Event, str, float]] = []
    for event in events:
        if isinstance(event, Scalar):
            out.append((event, event.name, event.value))
        elif isinstance(event, Metrics):
            out.extend((event, name, value) for name, value in event.values.items())
    return out


def cell(value: int | str | None) -> str:
    return "" if value is None else str(value)


def check_csv_long(path: Path, events: Sequence[Event]) -> None:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    expected = metric_values(events)
    assert len(rows) == len(expected)
    for row, (event, name, value) in zip(rows, expected, strict=True):
        ctx = event.context or Context()
        assert (row["origin"], int(row["step"]), row["name"]) == (event.origin.label, event.step, name)
        assert same(float(row["wall_time"]), event.wall_time) and same(float(row["value"]), value)
        assert (row["epoch"], row["round"], row["task"]) == (cell(ctx.epoch), cell(ctx.round), cell(ctx.task))


def wide_column(name: str) -> str:
    """The wide layout's column of a metric: its name, prefixed where it would repeat a column."""
    return f"metric:{name}" if name in ("wall_time", "origin", "step") or name.startswith("metric:") else name


def check_csv_wide(path: Path, events: Sequence[Event]) -> None:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    names = list(dict.fromkeys(name for _, name, _ in metric_values(events)))
    assert reader.fieldnames == ["wall_time", "origin", "step", *map(wide_column, names)]
    got: dict[str, list[tuple[int, float, dict[str, float]]]] = {}
    for row in rows:
        cells = {name: float(row[wide_column(name)]) for name in names if row[wide_column(name)] != ""}
        got.setdefault(row["origin"], []).append((int(row["step"]), float(row["wall_time"]), cells))
    assert normalized(got) == normalized(wide_rows(events))


def wide_rows(events: Sequence[Event]) -> dict[str, list[tuple[int, float, dict[str, float]]]]:
    """Per origin label, the wide layout's rows: consecutive events of one step make one row (an
    empty Metrics too: it is a row without values)."""
    rows: dict[str, list[tuple[int, float, dict[str, float]]]] = {}
    for event in events:
        if not isinstance(event, (Scalar, Metrics)):
            continue
        label_rows = rows.setdefault(event.origin.label, [])
        if not label_rows or label_rows[-1][0] != event.step:
            label_rows.append((event.step, event.wall_time, {}))
        label_rows[-1][2].update({event.name: event.value} if isinstance(event, Scalar) else event.values)
    return rows


def as_jsonl_reads_back(event: Event) -> Event:
    """The documented JSONL limit: a non-finite hyperparameter comes back as its string."""
    if not isinstance(event, Hparams):
        return event
    spelled = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}
    params = {k: spelled.get(repr(v), v) if isinstance(v, float) else v for k, v in event.params.items()}
    return msgspec.structs.replace(event, params=params)


def check_jsonl(path: Path, events: Sequence[Event]) -> None:
    expected = [as_jsonl_reads_back(e) for e in events]
    assert normalized(read_jsonl(path)) == normalized(expected)


EVERYTHING = {"scalars": 0, "histograms": 0, "tensors": 0, "compressedHistograms": 0, "images": 0, "audio": 0}
LAYOUT_TAG = "custom_scalars__config__"


def tensor_payload(tensor: Any) -> list[Any]:
    """A tensor's strings (text, layouts) or its float32 values as reprs (PR curves, meshes)."""
    return list(tensor.string_val) or [repr(v) for v in tensor.float_val]


def media_tensors(event: Event) -> dict[str, list[Any]]:
    """The tensor tags a PR curve or a mesh becomes, with their values as tensor_payload gives them."""
    if isinstance(event, PrCurve):
        return {event.name: [repr(f32(v)) for series in CURVES for v in getattr(event, series)]}
    if isinstance(event, Mesh):
        parts = [(1, event.vertices), (2, event.faces), (3, event.colors)]
        return {
            f"{event.name}_{kind}": [repr(v) for v in np.frombuffer(data, "<f4").tolist()]
            for kind, data in parts
            if data is not None
        }
    return {}


def check_tensorboard(logdir: Path, events: Sequence[Event]) -> None:
    by_run: dict[Path, list[Event]] = {}
    for event in events:
        run = logdir if event.origin == DEFAULT_ORIGIN else logdir / event.origin.label
        by_run.setdefault(run, []).append(event)
    for run, run_events in by_run.items():
        acc = EventAccumulator(str(run), size_guidance=EVERYTHING)
        acc.Reload()
        scalars: dict[str, list[tuple[int, float, str]]] = {}
        tensors: dict[str, list[tuple[int, float, Any]]] = {}
        histograms: dict[str, list[Histogram]] = {}
        pictures: dict[str, list[Image | Video]] = {}
        sounds: dict[str, list[Audio]] = {}
        for event in run_events:
            pairs = event.metrics.items() if isinstance(event, Hparams) else metric_values([event])
            for *_, name, value in pairs:
                scalars.setdefault(name, []).append((event.step, event.wall_time, repr(f32(value))))
            if isinstance(event, Text):
                tensors.setdefault(f"{event.name}/text_summary", []).append(
                    (event.step, event.wall_time, [event.text.encode()])
                )
            if isinstance(event, Histogram):
                histograms.setdefault(event.name, []).append(event)
            if isinstance(event, (Image, Video)):
                pictures.setdefault(event.name, []).append(event)
            if isinstance(event, Audio):
                sounds.setdefault(event.name, []).append(event)
            if isinstance(event, ChartLayout):
                layout_tensor = custom_scalars(event.layout).value[0].tensor
                tensors.setdefault(LAYOUT_TAG, []).append((event.step, event.wall_time, list(layout_tensor.string_val)))
            for tag, payload in media_tensors(event).items():
                tensors.setdefault(tag, []).append((event.step, event.wall_time, payload))
            if isinstance(event, Tensor):
                tensors.setdefault(event.name, []).append((event.step, event.wall_time, torch_tensor_proto(event)))
        tags = acc.Tags()
        assert sorted(tags["scalars"]) == sorted(scalars)
        for tag, expected in scalars.items():
            assert [(s.step, s.wall_time, repr(s.value)) for s in acc.Scalars(tag)] == expected
        assert sorted(tags["tensors"]) == sorted(tensors)
        for tag, expected_tensors in tensors.items():
            got = [(t.step, t.wall_time, t.tensor_proto) for t in acc.Tensors(tag)]
            assert len(got) == len(expected_tensors)
            for (step, wall_time, proto), expected_tensor in zip(got, expected_tensors, strict=True):
                payload = proto if not isinstance(expected_tensor[2], list) else tensor_payload(proto)
                assert (step, wall_time, payload) == expected_tensor
        assert sorted(tags["histograms"]) == sorted(histograms)
        for tag, expected_histograms in histograms.items():
            for got_histogram, event in zip(acc.Histograms(tag), expected_histograms, strict=True):
                check_histogram(got_histogram, event)
        assert sorted(tags["images"]) == sorted(pictures)
        for tag, expected_images in pictures.items():
            for got_image, picture in zip(acc.Images(tag), expected_images, strict=True):
                check_image(got_image, picture) if isinstance(picture, Image) else check_video(got_image, picture)
        assert sorted(tags["audio"]) == sorted(sounds)
        for tag, expected_sounds in sounds.items():
            for got_audio, sound in zip(acc.Audio(tag), expected_sounds, strict=True):
                check_audio(got_audio, sound)
        graphs = [e for e in run_events if isinstance(e, Graph)]
        assert tags["graph"] is bool(graphs)
        assert tags["run_metadata"] == (["profiler"] if any(g.run_metadata for g in graphs) else [])
        check_projector(run, [e for e in run_events if isinstance(e, Embedding)])
        hparams = [e for e in run_events if isinstance(e, Hparams)]
        if hparams:
            check_hparams(acc, hparams[0])


def torch_tensor_proto(event: Tensor) -> Any:
    """The TensorProto torch's writer makes of the tensor whose bytes the event holds."""
    dtype = getattr(torch, event.dtype)
    raw = torch.int16 if event.dtype == "bfloat16" else torch.bool if event.dtype == "bool" else dtype
    flat = (
        torch.frombuffer(bytearray(event.data), dtype=torch.uint8).view(raw)
        if event.data
        else torch.empty(0, dtype=raw)
    )
    return tensor_proto(event.name, flat.view(dtype).reshape(event.shape)).value[0].tensor


def check_video(got: Any, event: Video) -> None:
    """An animated GIF of the clip's size (GIF may merge frames that repeat)."""
    assert (got.step, got.wall_time, got.width, got.height) == (event.step, event.wall_time, event.width, event.height)
    decoded = PILImage.open(io.BytesIO(got.encoded_image_string))
    assert decoded.format == "GIF" and decoded.size == (event.width, event.height)
    assert 1 <= decoded.n_frames <= event.length


def check_audio(got: Any, event: Audio) -> None:
    """A WAV file of exactly the samples logged."""
    assert (got.step, got.wall_time, got.sample_rate, got.length_frames) == (
        event.step,
        event.wall_time,
        f32(event.sample_rate),  # TensorBoard's summary keeps the rate as a float32
        event.frames,
    )
    with wave.open(io.BytesIO(got.encoded_audio_string)) as wav:
        assert (wav.getnchannels(), wav.getframerate()) == (event.channels, event.sample_rate)
        assert wav.readframes(event.frames) == event.samples


def check_projector(run: Path, embeddings: list[Embedding]) -> None:
    """Every embedding has its entry in projector_config.pbtxt and, for the last one of each name
    and step (a later one rewrites the files), its points in tensors.tsv."""
    if not embeddings:
        assert not (run / "projector_config.pbtxt").exists()
        return
    config = (run / "projector_config.pbtxt").read_text(encoding="utf8")
    last = {}
    for event in embeddings:
        assert f'tensor_name: "{event.name}:{str(event.step).zfill(5)}"' in config
        last[(event.name, event.step)] = event
    for (name, step), event in last.items():
        folder = run / str(step).zfill(5) / name.replace("%", "%25").replace("/", "%2f").replace("\\", "%5c")
        rows = (folder / "tensors.tsv").read_text().split("\n")[:-1]
        assert [[float(v) for v in row.split("\t")] for row in rows] == (
            np.frombuffer(event.values, "<f8").reshape(event.rows, event.dims).tolist()
        )
        if event.metadata is not None:
            assert (folder / "metadata.tsv").read_text(encoding="utf8").split("\n")[:-1] == list(event.metadata)


def check_histogram(got: Any, event: Histogram) -> None:
    h = got.histogram_value
    assert (got.step, got.wall_time) == (event.step, event.wall_time)
    if event.values is not None:
        finite = [v for v in event.values if math.isfinite(v)]  # NaN/inf have no bucket: left out
        assert h.num == len(finite)
        if finite:
            assert (h.min, h.max) == (min(finite), max(finite))
    else:
        assert list(h.bucket_limit) == list(event.bucket_limits or ())
        assert list(h.bucket) == list(event.bucket_counts or ())


def check_image(got: Any, event: Image) -> None:
    """The PNG decodes to exactly the pixels logged, in the mode of their channels."""
    assert (got.step, got.wall_time, got.width, got.height) == (event.step, event.wall_time, event.width, event.height)
    decoded = PILImage.open(io.BytesIO(got.encoded_image_string))
    assert decoded.mode == {1: "L", 3: "RGB", 4: "RGBA"}[event.channels]
    assert np.asarray(decoded).tobytes() == event.pixels


def check_hparams(acc: EventAccumulator, event: Hparams) -> None:
    """The HPARAMS tab shows a run's first Hparams event (TensorBoard keeps the first metadata of
    a tag): its params and its metric names."""
    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    got = start.session_start_info.hparams
    assert sorted(got) == sorted(event.params)
    for key, value in event.params.items():
        if isinstance(value, str):
            assert got[key].string_value == value
        elif isinstance(value, bool):
            assert got[key].bool_value is value
        else:
            assert same(got[key].number_value, float(value))
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert [m.name.tag for m in experiment.metric_infos] == list(event.metrics)


@dataclass
class Sinks:
    """Every built-in sink but W&B, on one bus, and what the in-memory ones received."""

    root: Path
    in_process: bool
    batches: list[Event] = field(default_factory=list)
    calls: list[tuple[Any, ...]] = field(default_factory=list)
    memory: MemorySink = field(default_factory=MemorySink)

    def add_to(self, bus: MetricBus) -> None:
        isolate: Literal["none", "process"] = "none" if self.in_process else "process"
        bus.add_sink(CsvSink(self.root / "long.csv"), isolate=isolate)
        bus.add_sink(CsvSink(self.root / "wide.csv", layout="wide"), isolate=isolate)
        bus.add_sink(JsonlSink(self.root / "events.jsonl"), isolate=isolate)
        bus.add_sink(TensorBoardSink(self.root / "tb"), isolate=isolate)
        if self.in_process:
            bus.add_sink(self.memory)
            bus.add_sink(CallbackSink(lambda *call: self.calls.append(call)), name="callback-metric")
            bus.add_sink(CallbackSink(self.batches.extend, per="batch"), name="callback-batch")

    def check(self, events: Sequence[Event]) -> None:
        check_csv_long(self.root / "long.csv", events)
        check_csv_wide(self.root / "wide.csv", events)
        check_jsonl(self.root / "events.jsonl", events)
        check_tensorboard(self.root / "tb", events)
        if self.in_process:
            assert normalized(self.memory.events) == normalized(events)
            assert normalized(self.batches) == normalized(events)
            expected_calls = [
                (e.origin.label, (e.context or Context()).task or "", name, value, _round(e))
                for e, name, value in metric_values(events)
            ]
            assert normalized(self.calls) == normalized(expected_calls)


def _round(event: Event) -> int:
    """OpenFL's round_number: the context's round, else the step."""
    return event.context.round if event.context is not None and event.context.round is not None else event.step


async def publish(sinks: Sinks, events: list[Event]) -> MetricBus:
    async with MetricBus(raise_on_loss=False) as bus:
        sinks.add_to(bus)
        await bus.publish_many(events)
    return bus


def check_stats(bus: MetricBus, events: Sequence[Event]) -> None:
    for name, stats in bus.stats().items():
        assert stats.state is not SinkState.FAILED, (name, stats.last_error)
        assert stats.dropped == {} and stats.balanced, (name, stats)
        assert stats.delivered == stats.published, (name, stats)


def round_trip(calls: list[Spec], *, in_process: bool) -> None:
    """Build what `calls` describe, publish what was accepted to every sink, read it all back."""
    events = [e for e in map(build, calls) if e is not None]
    with tempfile.TemporaryDirectory() as root:
        sinks = Sinks(Path(root), in_process)
        bus = anyio.run(publish, sinks, events)
        check_stats(bus, events)
        sinks.check(events)


ROUND_TRIP = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@settings(ROUND_TRIP, max_examples=100)
@given(st.lists(specs(hostile_fields=1, hostile_origin=False), min_size=1, max_size=12))
def test_every_accepted_event_reaches_every_sink_and_reads_back_exactly(calls: list[Spec]) -> None:
    round_trip(calls, in_process=True)


@settings(ROUND_TRIP, max_examples=10)  # each example starts four workers, one imports tensorboardX: ~2 s
@given(st.lists(specs(hostile_fields=1, hostile_origin=False), min_size=1, max_size=30))
def test_the_file_sinks_in_worker_processes_read_back_the_same(calls: list[Spec]) -> None:
    round_trip(calls, in_process=False)


def test_tensorboard_bins_values_numpy_cannot_split_into_equal_bins() -> None:
    """np.histogram cannot split these into equal bins: the sink writes one bucket instead."""
    events: list[Event] = [
        Histogram("one_large_value", 0, values=(140737488355335.0,)),  # 2**47 + 7: its ulp is wider than a bin
        Histogram("nearly_equal", 1, values=(1.0, 1.0 + 2**-52)),
        Histogram("subnormal_range", 2, values=(0.0, 5e-324)),
        Histogram("beyond_float_range", 3, values=(-1e308, 1e308)),
    ]
    with tempfile.TemporaryDirectory() as root:
        sinks = Sinks(Path(root), in_process=True)
        bus = anyio.run(publish, sinks, events)
        check_stats(bus, events)
        check_tensorboard(Path(root) / "tb", events)


def test_distinct_origins_with_one_name_stay_apart_in_every_sink() -> None:
    """Origins that once shared a label: each gets its own CSV origin value, TensorBoard run and
    callback node name, and every event reads back from its own place."""
    pairs = [
        (Origin(site="x"), Origin(node="x")),
        (Origin(site="a", rank=0), Origin(site="a", node="rank0")),
        (DEFAULT_ORIGIN, Origin(site="main")),
        (Origin(site="rank3"), Origin(rank=3)),
    ]
    events: list[Event] = [
        Scalar("loss", float(i), step=0, origin=origin) for i, origin in enumerate(o for pair in pairs for o in pair)
    ]
    with tempfile.TemporaryDirectory() as root:
        sinks = Sinks(Path(root), in_process=True)
        bus = anyio.run(publish, sinks, events)
        check_stats(bus, events)
        sinks.check(events)  # CSV, JSONL, TensorBoard (a run per label), callbacks: each event in its place
        with open(Path(root) / "long.csv", newline="", encoding="utf-8") as f:
            labels = [row["origin"] for row in csv.DictReader(f)]
        runs = {p.parent for p in (Path(root) / "tb").rglob("events.out.tfevents.*")}
    assert len(set(labels)) == len(events), labels
    assert len(runs) == len(events), sorted(runs)
    assert {call[0] for call in sinks.calls} == set(labels)
