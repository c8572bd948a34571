"""Images, figures and custom-scalar layouts: SummaryWriter next to tensorboardX, read back with
TensorBoard's reader and decoded with PIL; the Image and ChartLayout events and where they go."""

from __future__ import annotations

import io
import json
import zlib
from pathlib import Path
from typing import Any

import anyio
import matplotlib
import numpy as np
import pytest
import tensorboardX
import torch
from PIL import Image as PILImage
from tensorboard import context as tb_context
from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins import base_plugin
from tensorboard.plugins.custom_scalar import custom_scalars_plugin

import producers
from bus import EVENT_TYPES, ChartLayout, Image, InvalidEvent, MetricBus, Scalar
from bus._validate import MAX_IMAGE_BYTES
from producers import LogFrequency, MetricLogger, SummaryWriter
from sinks import CallbackSink, ConsoleSink, CsvSink, MemorySink
from sinks._png import encode_png

matplotlib.use("Agg")  # no display in tests; pyplot is imported after this
import matplotlib.pyplot as plt

WALL = 1_700_000_000.0
rng = np.random.default_rng(0)


def images(logdir: Path) -> dict[str, list[tuple[int, float, int, int, np.ndarray]]]:
    """Every image of the run in `logdir` as TensorBoard reads it and PIL decodes it:
    tag -> [(step, wall_time, width, height, RGBA pixels)]. Decoded to RGBA, so that grayscale
    (one channel here, RGB in tensorboardX) and RGB compare by what is shown."""
    acc = EventAccumulator(str(logdir), size_guidance={"images": 0})
    acc.Reload()
    out = {}
    for tag in acc.Tags()["images"]:
        out[tag] = [
            (e.step, e.wall_time, e.width, e.height, decode(e.encoded_image_string).convert("RGBA"))
            for e in acc.Images(tag)
        ]
    return {tag: [(*head, np.asarray(image)) for *head, image in series] for tag, series in out.items()}


def decode(png: bytes) -> PILImage.Image:
    image = PILImage.open(io.BytesIO(png))
    assert image.format == "PNG"
    image.load()
    return image


def assert_same_images(ours: Path, theirs: Path) -> None:
    got, expected = images(ours), images(theirs)
    assert sorted(got) == sorted(expected)
    for tag, series in expected.items():
        assert len(got[tag]) == len(series), tag
        for (*head, pixels), (*their_head, their_pixels) in zip(got[tag], series, strict=True):
            assert head == their_head, tag
            assert np.array_equal(pixels, their_pixels), tag


def both(script: Any, tmp_path: Path) -> tuple[Path, Path]:
    """Run `script(writer_class, logdir)` with tensorboardX and with metricbus."""
    script(tensorboardX.SummaryWriter, tmp_path / "tbx")
    script(producers.SummaryWriter, tmp_path / "ours")
    return tmp_path / "ours", tmp_path / "tbx"


# ---- add_image: every layout and dtype, the pixels tensorboardX writes ----

UNIT = rng.random((3, 17, 23))  # float64 in [0, 1), CHW
IMAGES: dict[str, tuple[Any, str]] = {
    "chw_float64": (UNIT, "CHW"),
    "chw_float32": (UNIT.astype(np.float32), "CHW"),
    "chw_float16": (UNIT.astype(np.float16), "CHW"),
    "hwc_float": (UNIT.transpose(1, 2, 0).copy(), "HWC"),
    "hwc_lowercase": (UNIT.transpose(1, 2, 0), "hwc"),
    "wch_odd_order": (UNIT.transpose(2, 0, 1), "WCH"),
    "hwc_uint8": ((UNIT * 255).astype(np.uint8).transpose(1, 2, 0), "HWC"),
    "hw_uint8": (rng.integers(0, 256, (17, 23), dtype=np.uint8), "HW"),
    "hw_float": (UNIT[0], "HW"),
    "1hw_gray": (UNIT[:1], "CHW"),
    "rgba_hwc": (rng.integers(0, 256, (17, 23, 4), dtype=np.uint8), "HWC"),
    "torch_chw": (torch.from_numpy(UNIT.astype(np.float32)), "CHW"),
    "torch_grad": (torch.from_numpy(UNIT.astype(np.float32)).requires_grad_(), "CHW"),
    "bool_mask": (UNIT[0] > 0.5, "HW"),  # tensorboardX scales every dtype but uint8 by 255
    "int_zero_one": ((UNIT > 0.5).astype(np.int64), "CHW"),
    "one_pixel": (np.array([[[0.25]], [[0.5]], [[1.0]]]), "CHW"),
    "one_row": (UNIT[:, :1, :], "CHW"),  # a size-1 axis stays an axis
    "nchw_batch_of_one": (UNIT[None], "NCHW"),  # 4-d in add_image: a grid of one
}


def add_image_script(writer_class: Any, logdir: Path) -> None:
    with writer_class(logdir) as writer:
        for step, (tag, (image, dataformats)) in enumerate(IMAGES.items()):
            writer.add_image(tag, image, step, walltime=WALL + step, dataformats=dataformats)
        writer.add_image("default_step_and_format", UNIT)  # CHW, step 0, now
        for step in range(3):
            writer.add_image("series", UNIT * (step / 2), step, WALL)


def test_add_image_pixels_steps_and_sizes_are_tensorboardxs_for_every_layout_and_dtype(tmp_path: Path) -> None:
    ours, theirs = both(add_image_script, tmp_path)
    got, expected = images(ours), images(theirs)
    assert sorted(got) == sorted(expected) == sorted([*IMAGES, "default_step_and_format", "series"])
    for tag, series in expected.items():
        for (step, wall_time, *size, pixels), (their_step, their_wall_time, *their_size, their_pixels) in zip(
            got[tag], series, strict=True
        ):
            assert (step, *size) == (their_step, *their_size) and np.array_equal(pixels, their_pixels), tag
            assert wall_time == their_wall_time or tag == "default_step_and_format"  # both "now"
    assert got["chw_float64"][0][:4] == (0, WALL, 23, 17) and len(got["series"]) == 3
    assert got["series"][1][4][0, 0, 0] == int(UNIT[0, 0, 0] * 0.5 * 255)  # truncated, as tensorboardX does


def test_grayscale_stays_one_channel_and_rgba_keeps_its_alpha(tmp_path: Path) -> None:
    with SummaryWriter(tmp_path) as writer:
        writer.add_image("gray", IMAGES["hw_uint8"][0], 0, dataformats="HW")
        writer.add_image("rgba", IMAGES["rgba_hwc"][0], 0, dataformats="HWC")
    acc = EventAccumulator(str(tmp_path), size_guidance={"images": 0})
    acc.Reload()
    gray, rgba = decode(acc.Images("gray")[0].encoded_image_string), decode(acc.Images("rgba")[0].encoded_image_string)
    assert gray.mode == "L" and np.array_equal(np.asarray(gray), IMAGES["hw_uint8"][0])
    assert rgba.mode == "RGBA" and np.array_equal(np.asarray(rgba), IMAGES["rgba_hwc"][0])


def test_values_outside_zero_to_one_are_clipped_and_nan_is_black() -> None:
    """tensorboardX casts these unsafely (they wrap around); torch and metricbus clip."""
    row = np.array([[-0.5, 0.0, 0.5, 1.0, 1.5, np.nan, np.inf, -np.inf, 0.25, -0.0]])
    sink = MemorySink()
    with MetricLogger(sinks=[sink]) as log, SummaryWriter(logger=log) as writer:
        writer.add_image("clipped", row, 0, dataformats="HW")
        writer.add_image("clipped_float32", row.astype(np.float32), 0, dataformats="HW")
    for event in sink.events:
        assert isinstance(event, Image) and (event.height, event.width, event.channels) == (1, 10, 1)
        assert list(event.pixels) == [0, 0, 127, 255, 255, 0, 255, 0, 63, 0]


# ---- add_images: tensorboardX's grid ----

BATCHES: dict[str, tuple[Any, str]] = {
    "two": (rng.random((2, 3, 5, 4)), "NCHW"),
    "eight": (rng.random((8, 3, 5, 4)).astype(np.float32), "NCHW"),
    "eleven_two_rows": (rng.random((11, 3, 5, 4)), "NCHW"),
    "seventeen_three_rows": (rng.integers(0, 256, (17, 5, 4, 3), dtype=np.uint8), "NHWC"),
    "gray_batch": (rng.random((5, 1, 6, 7)), "NCHW"),
    "rgba_batch": (rng.integers(0, 256, (3, 4, 6, 7), dtype=np.uint8), "NCHW"),
    "one": (rng.random((1, 3, 5, 4)), "NCHW"),
    "torch_batch": (torch.rand(9, 3, 5, 4, generator=torch.Generator().manual_seed(0)), "NCHW"),
    "hwcn_odd_order": (rng.random((5, 4, 3, 10)), "HWCN"),
    "single_image_in_add_images": (UNIT, "CHW"),
}
LISTS: dict[str, tuple[Any, str]] = {
    "list_of_chw_tensors": (
        [torch.rand(3, 5, 4, generator=torch.Generator().manual_seed(i)) for i in range(10)],
        "CHW",
    ),
    "list_of_hwc_arrays": ([rng.random((5, 4, 3)) for _ in range(3)], "HWC"),
}


def add_images_script(writer_class: Any, logdir: Path) -> None:
    with writer_class(logdir) as writer:
        for step, (tag, (batch, dataformats)) in enumerate({**BATCHES, **LISTS}.items()):
            writer.add_images(tag, batch, step, walltime=WALL + step, dataformats=dataformats)
        writer.add_images("default_format", BATCHES["eleven_two_rows"][0], 99, WALL)


def test_add_images_draws_tensorboardxs_grid_of_eight_a_row(tmp_path: Path) -> None:
    ours, theirs = both(add_images_script, tmp_path)
    assert_same_images(ours, theirs)
    got = images(ours)
    assert got["eleven_two_rows"][0][2:4] == (8 * 4, 2 * 5)  # width, height: 8 columns, 2 rows
    assert got["seventeen_three_rows"][0][2:4] == (8 * 4, 3 * 5)
    assert got["two"][0][2:4] == (2 * 4, 5)
    assert np.all(got["eleven_two_rows"][0][4][5:, 3 * 4 :, :3] == 0)  # the empty cells are black


# ---- add_figure ----


def figure(seed: int, size: tuple[float, float] = (3, 2)) -> Any:
    fig, ax = plt.subplots(figsize=size, dpi=50)
    ax.plot(np.random.default_rng(seed).normal(size=20))
    ax.set_title(f"seed {seed}")
    return fig


def add_figure_script(writer_class: Any, logdir: Path) -> None:
    with writer_class(logdir) as writer:
        writer.add_figure("one", figure(0), 0, walltime=WALL)
        writer.add_figure("list", [figure(1), figure(2), figure(3)], 1, walltime=WALL)
        kept = figure(4)
        writer.add_figure("kept", kept, 2, close=False, walltime=WALL)
        assert plt.fignum_exists(kept.number)
        plt.close(kept)


def test_add_figure_renders_tensorboardxs_pixels_and_closes_the_figure(tmp_path: Path) -> None:
    ours, theirs = both(add_figure_script, tmp_path)
    assert plt.get_fignums() == []  # every figure closed: by add_figure, or by the script
    assert_same_images(ours, theirs)
    got = images(ours)
    assert got["one"][0][2:4] == (150, 100)  # 3 x 2 inches at 50 dpi
    assert got["list"][0][2:4] == (3 * 150, 100)
    assert np.all(got["one"][0][4][:, :, 3] == 255)  # RGB: alpha dropped, as tensorboardX does


def test_a_figure_without_pyplot_or_with_a_non_agg_canvas_is_rendered(tmp_path: Path) -> None:
    from matplotlib.backends.backend_svg import FigureCanvasSVG
    from matplotlib.figure import Figure

    def script(writer_class: Any, logdir: Path) -> None:
        plain = Figure(figsize=(2, 2), dpi=40)
        plain.add_subplot().plot([0, 1, 0])
        svg = Figure(figsize=(2, 2), dpi=40)
        FigureCanvasSVG(svg)
        svg.add_subplot().bar([0, 1], [1, 2])
        with writer_class(logdir) as writer:
            writer.add_figure("plain", plain, 0, walltime=WALL)
            writer.add_figure("svg", svg, 0, walltime=WALL)

    assert_same_images(*both(script, tmp_path))


# ---- the training thread: a copy, taken at the call ----


def test_the_call_keeps_a_copy_so_later_changes_to_the_array_are_not_logged() -> None:
    sink = MemorySink()
    image = np.zeros((3, 4, 5), dtype=np.float32)
    batch = np.zeros((2, 4, 5, 3), dtype=np.uint8)
    with MetricLogger(sinks=[sink]) as log, SummaryWriter(logger=log) as writer:
        writer.add_image("img", image, 0)
        writer.add_images("batch", batch, 0, dataformats="NHWC")
        writer.add_image("uint8", batch[0], 0, dataformats="HWC")
        image += 1.0
        batch += 7
    assert [type(e) for e in sink.events] == [Image, Image, Image]
    assert all(e.pixels == bytes(len(e.pixels)) for e in sink.events if isinstance(e, Image))
    pixels = bytearray(b"\x01\x02\x03")
    event = Image("x", 0, pixels=pixels, height=1, width=1, channels=3)
    pixels[0] = 9
    assert event.pixels == b"\x01\x02\x03" and type(event.pixels) is bytes


def test_log_freq_skips_images_before_conversion_and_still_closes_skipped_figures() -> None:
    sink = MemorySink()
    with MetricLogger(sinks=[sink]) as log:
        writer = SummaryWriter(logger=log, log_freq=LogFrequency(first=1))
        for step in range(3):
            writer.add_image("img", np.zeros((3, 2, 2)), step)
            writer.add_images("batch", np.zeros((2, 3, 2, 2)), step)
            writer.add_figure("fig", figure(step), step)
        writer.add_image("not_converted", "not an image", 5)  # skipped: never read
    assert [(e.name, e.step) for e in sink.events] == [("img", 0), ("batch", 0), ("fig", 0)]
    assert plt.get_fignums() == []


def test_write_to_disk_false_checks_images_and_writes_nothing(tmp_path: Path) -> None:
    writer = SummaryWriter(tmp_path / "rank1", write_to_disk=False)
    writer.add_image("img", UNIT, 0)
    writer.add_figure("fig", figure(0), 0)
    writer.add_custom_scalars_multilinechart(["loss"])
    with pytest.raises(InvalidEvent, match="channels"):
        writer.add_image("img", np.zeros((2, 4, 4)), 0)
    writer.close()
    assert list(tmp_path.iterdir()) == [] and plt.get_fignums() == []


# ---- what is refused, and why ----

REFUSED: list[tuple[str, Any, dict[str, Any], str]] = [
    ("add_image", np.zeros((3, 4)), {}, r"img_tensor=\(3, 4\): has 2 dimensions, dataformats 'CHW' names 3"),
    ("add_image", np.zeros((3, 4, 4)), {"dataformats": "CHH"}, "dataformats='CHH': must name the axes"),
    ("add_image", np.zeros((3, 4, 4)), {"dataformats": "CHWX"}, "dataformats='CHWX': must name the axes"),
    ("add_image", np.zeros((3, 4, 4)), {"dataformats": None}, "dataformats=None: must be a str"),
    ("add_image", np.zeros((2, 4, 4)), {}, r"img_tensor=\(2, 4, 4\): has 2 channels; images take 1, 3 or 4"),
    ("add_image", np.zeros((3, 0, 4)), {}, "height=0: must be >= 1"),
    ("add_image", np.zeros((3, 4, 4), complex), {}, "must hold real numbers, not dtype complex128"),
    ("add_image", np.array([["a"]]), {"dataformats": "HW"}, "must hold real numbers, not dtype <U1"),
    ("add_image", object(), {}, "must hold real numbers, not dtype object"),
    ("add_image", [[0.5, 0.5], [0.5]], {"dataformats": "HW"}, r"cannot be read as an array \(ValueError\)"),
    ("add_image", np.zeros((3, 4, 4)), {"global_step": -1}, "step=-1: must be >= 0"),
    ("add_image", np.zeros((3, 4, 4)), {"walltime": float("nan")}, "wall_time=nan: must be a finite number"),
    ("add_images", np.zeros((0, 3, 4, 4)), {}, r"img_tensor=\(0, 3, 4, 4\): holds no image"),
    ("add_images", [np.zeros((3, 4, 4))], {"dataformats": "NCHW"}, "a list of images takes 'CHW' or 'HWC'"),
    ("add_images", [np.zeros((3, 4, 4)), np.zeros((3, 4, 5))], {"dataformats": "CHW"}, "must all have one shape"),
    ("add_image", np.zeros((4, 4096, 4097), np.uint8), {}, f"is 67125248 bytes, the limit is {MAX_IMAGE_BYTES}"),
]


@pytest.mark.parametrize(("method", "image", "kwargs", "message"), REFUSED)
def test_a_bad_image_raises_invalid_event_naming_the_field(method: str, image: Any, kwargs: Any, message: str) -> None:
    sink = MemorySink()
    with (
        MetricLogger(sinks=[sink]) as log,
        SummaryWriter(logger=log) as writer,
        pytest.raises(InvalidEvent, match=message),
    ):
        getattr(writer, method)("img", image, **kwargs)
    assert sink.events == []


def test_an_image_too_large_is_refused_but_the_largest_allowed_is_taken() -> None:
    side = 4096  # 4096 x 4096 RGBA: exactly the limit
    event = Image("big", 0, pixels=bytes(side * side * 4), height=side, width=side, channels=4)
    assert len(event.pixels) == MAX_IMAGE_BYTES
    with pytest.raises(InvalidEvent, match="the limit is"):
        Image("big", 0, pixels=b"", height=side, width=side + 1, channels=4)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"pixels": bytes(11)}, "pixels"),
        ({"pixels": np.zeros(12, np.uint8)}, "pixels"),
        ({"pixels": "abc"}, "pixels"),
        ({"channels": 2, "pixels": bytes(8)}, "channels"),
        ({"height": 0}, "height"),
        ({"width": -1}, "width"),
        ({"height": 2.0}, "height"),
        ({"channels": True}, "channels"),
    ],
)
def test_an_image_event_checks_its_shape_against_its_bytes(fields: dict[str, Any], field: str) -> None:
    arguments = {"pixels": bytes(12), "height": 2, "width": 2, "channels": 3, **fields}
    with pytest.raises(InvalidEvent) as info:
        Image("img", 0, **arguments)
    assert info.value.field == field


def test_an_image_event_repr_gives_the_size_of_its_pixels_not_the_bytes() -> None:
    event = Image("img", 3, pixels=bytes(3 * 64 * 64), height=64, width=64, channels=3, wall_time=WALL)
    assert repr(event).startswith("Image(name='img', step=3, pixels=<12288 bytes>, height=64, width=64, channels=3,")


# ---- add_custom_scalars ----

LAYOUT = {
    "Losses": {"train and val": ["Multiline", ["loss/train", "loss/val"]], "all": ["Multiline", [r"loss/.*"]]},
    "Accuracy": {"with bounds": ["Margin", ["acc/mean", "acc/low", "acc/high"]]},
}


def custom_scalars_tab(logdir: Path) -> dict[str, Any]:
    """What TensorBoard's CUSTOM SCALARS tab is given: its plugin's merged layout of every run."""
    multiplexer = plugin_event_multiplexer.EventMultiplexer().AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    provider = data_provider.MultiplexerDataProvider(multiplexer, str(logdir))
    context = base_plugin.TBContext(logdir=str(logdir), data_provider=provider, plugin_name_to_instance={})
    plugin = custom_scalars_plugin.CustomScalarsPlugin(context)
    return json.loads(plugin.layout_impl(tb_context.RequestContext(), ""))  # type: ignore[no-any-return]


def layout_script(writer_class: Any, logdir: Path) -> None:
    with writer_class(logdir) as writer:
        for step in range(3):
            for tag in ("loss/train", "loss/val", "acc/mean", "acc/low", "acc/high"):
                writer.add_scalar(tag, step / 10, step)
        writer.add_custom_scalars(LAYOUT)
    with writer_class(logdir / "shorthand") as writer:
        writer.add_scalar("a", 1.0, 0)
        writer.add_custom_scalars_marginchart(["a", "b", "c"], category="M", title="margin")
        writer.add_custom_scalars_multilinechart(["a", "b"])  # replaces the run's layout


def test_add_custom_scalars_gives_the_custom_scalars_tab_tensorboardxs_layout(tmp_path: Path) -> None:
    ours, theirs = both(layout_script, tmp_path)
    tab = custom_scalars_tab(ours)
    assert tab == custom_scalars_tab(theirs)
    titles = {c["title"]: [chart["title"] for chart in c["chart"]] for c in tab["category"]}
    assert titles == {"Losses": ["train and val", "all"], "Accuracy": ["with bounds"], "default": ["untitled"]}
    shorthand = custom_scalars_tab(ours / "shorthand")
    assert shorthand == custom_scalars_tab(theirs / "shorthand")
    assert shorthand["category"][0]["chart"][0]["multiline"]["tag"] == ["a", "b"]  # the latest layout wins


@pytest.mark.parametrize(
    ("layout", "field"),
    [
        ([], "layout"),
        ({"": {"t": ["Multiline", ["a"]]}}, "layout key"),
        ({"c": ["Multiline", ["a"]]}, "layout['c']"),
        ({"c": {"t": ["Margin", ["a", "b"]]}}, "layout['c']['t'][1]"),
        ({"c": {"t": ["Line", ["a"]]}}, "layout['c']['t'][0]"),
        ({"c": {"t": ["Multiline", "a"]}}, "layout['c']['t'][1]"),
        ({"c": {"t": ["Multiline", []]}}, "layout['c']['t'][1]"),
        ({"c": {"t": ["Multiline", ["a", 1]]}}, "layout['c']['t'][1][1]"),
        ({"c": {"t": "Multiline"}}, "layout['c']['t']"),
    ],
)
def test_a_bad_layout_raises_invalid_event_naming_the_field(layout: Any, field: str) -> None:
    with MetricLogger() as log, SummaryWriter(logger=log) as writer, pytest.raises(InvalidEvent) as info:
        writer.add_custom_scalars(layout)
    assert info.value.field == field


# ---- where Image and ChartLayout go ----


@pytest.mark.anyio
async def test_csv_console_and_per_metric_callbacks_are_not_sent_images_or_layouts(tmp_path: Path) -> None:
    calls: list[tuple[Any, ...]] = []
    batches: list[Any] = []
    memory = MemorySink()
    events = [
        Image("img", 1, pixels=bytes(3), height=1, width=1, channels=3),
        ChartLayout({"c": {"t": ("Multiline", ("loss",))}}),
        Scalar("loss", 0.5, step=1),
    ]
    async with MetricBus() as bus:
        csv = bus.add_sink(CsvSink(tmp_path / "m.csv"))
        console = bus.add_sink(ConsoleSink(file=io.StringIO()))
        bus.add_sink(CallbackSink(lambda *call: calls.append(call)), name="per-metric")
        bus.add_sink(CallbackSink(batches.extend, per="batch"), name="per-batch")
        bus.add_sink(memory)
        await bus.publish_many(events)
    stats = bus.stats()
    for name in (csv, console, "per-metric"):
        assert (stats[name].published, stats[name].delivered) == (1, 1), name
    assert (stats["per-batch"].delivered, stats["memory"].delivered) == (3, 3)
    assert batches == memory.events == events
    assert memory.values("loss") == [(1, 0.5)] and calls == [("main", "", "loss", 0.5, 1)]
    assert (tmp_path / "m.csv").read_text().count("\n") == 2  # the header and the scalar


def test_image_and_chart_layout_are_event_types() -> None:
    assert Image in EVENT_TYPES and ChartLayout in EVENT_TYPES


# ---- the PNG encoder ----


@pytest.mark.parametrize(("height", "width", "channels"), [(1, 1, 1), (1, 7, 3), (13, 1, 4), (31, 17, 3), (64, 64, 1)])
def test_encode_png_decodes_to_the_exact_pixels_in_any_png_reader(height: int, width: int, channels: int) -> None:
    pixels = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    png = encode_png(pixels.tobytes(), height, width, channels)
    image = decode(png)
    assert image.mode == {1: "L", 3: "RGB", 4: "RGBA"}[channels] and image.size == (width, height)
    assert np.array_equal(np.asarray(image).reshape(height, width, channels), pixels)
    # the chunks' CRCs are checked by PIL only in part: check every one, and the IDAT stream itself
    position = 8
    while position < len(png):
        length = int.from_bytes(png[position : position + 4], "big")
        kind_and_data = png[position + 4 : position + 8 + length]
        assert zlib.crc32(kind_and_data) == int.from_bytes(png[position + 8 + length : position + 12 + length], "big")
        position += 12 + length
    assert position == len(png)


def test_the_tensorboard_sink_needs_no_pil(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "PIL", None)  # importing PIL now fails

    async def main() -> None:
        from sinks import TensorBoardSink

        async with MetricBus() as bus:
            bus.add_sink(TensorBoardSink(tmp_path), isolate="none")
            await bus.publish(Image("img", 2, pixels=bytes(range(12)), height=2, width=2, channels=3, wall_time=WALL))

    anyio.run(main)
    monkeypatch.undo()
    ((step, wall_time, width, height, pixels),) = images(tmp_path)["img"]
    assert (step, wall_time, width, height) == (2, WALL, 2, 2)
    assert pixels[:, :, :3].tobytes() == bytes(range(12))
