"""Array conversions of the SummaryWriter's image methods, on the calling thread: tensorboardX's
dataformats, its [0, 1] float scaling and its 8-a-row grid, into the uint8 HWC pixels of an Image.
A few vectorized numpy passes; PNG encoding happens in the sinks."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from bus import IMAGE_CHANNELS, InvalidEvent

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "as_image_array",
    "close_figure",
    "figure_rgb",
    "fill_uint8",
    "host_values",
    "image_pixels",
    "number_values",
    "stack",
    "to_nhwc",
]


def host_values(values: Any) -> Any:
    """Torch tensors moved to the CPU as numpy (bfloat16, which numpy lacks, as float16, as
    torch.utils.tensorboard's make_np reads it); numpy arrays and sequences as they are."""
    detach = getattr(values, "detach", None)
    if detach is None:
        return values
    tensor = detach()
    if str(getattr(tensor, "dtype", "")) == "torch.bfloat16":
        tensor = tensor.half()  # torch's writer: x.to(torch.float16)
    return tensor.cpu().numpy()


def number_values(values: Any) -> Any:
    """`host_values`, with a bool array as 0.0 and 1.0: torch's writer reads histograms with
    `astype(float)`, so a mask's histogram counts its zeros and ones."""
    host = host_values(values)
    if getattr(getattr(host, "dtype", None), "kind", None) == "b":
        return host.astype("float64")
    return host


_GRID_COLUMNS = 8  # tensorboardX's make_grid: a batch of images is drawn 8 to a row
_IMAGE_AXES = {2: "HW", 3: "CHW", 4: "NCHW"}  # the axes a dataformats string of each length names


def as_image_array(img_tensor: Any, field: str = "img_tensor") -> np.ndarray:
    """A numpy array of an image's values: a torch tensor moved to the CPU (the one copy a GPU
    tensor needs), a numpy array as it is, a nested list read by numpy."""
    import numpy as np

    try:
        array = np.asarray(host_values(img_tensor))
    except Exception as exc:
        raise InvalidEvent(field, img_tensor, f"cannot be read as an array ({type(exc).__name__})") from exc
    if array.dtype.kind not in "buif":
        raise InvalidEvent(field, img_tensor, f"must hold real numbers, not dtype {array.dtype}")
    return array


def to_nhwc(array: np.ndarray, dataformats: str, field: str = "img_tensor") -> np.ndarray:
    """A 4-d NHWC view of `array` (no copy) whose axes `dataformats` names, as tensorboardX reads
    them: HW, any order of C, H, W, or of N, C, H, W; case does not matter."""
    if not isinstance(dataformats, str):
        raise InvalidEvent("dataformats", dataformats, f"must be a str, not {type(dataformats).__name__}")
    axes = dataformats.upper()
    if sorted(axes) != sorted(_IMAGE_AXES.get(len(axes), "")):
        raise InvalidEvent("dataformats", dataformats, "must name the axes HW, CHW or NCHW, in any order")
    if array.ndim != len(axes):
        raise InvalidEvent(
            field, array.shape, f"has {array.ndim} dimensions, dataformats {dataformats!r} names {len(axes)}"
        )
    full = axes if "N" in axes else "N" + axes if "C" in axes else "NC" + axes
    view = array.reshape((1,) * (len(full) - len(axes)) + array.shape)  # a view: the new axes are of size 1
    nhwc = view.transpose([full.index(a) for a in "NHWC"])
    count, _, _, channels = nhwc.shape
    if channels not in IMAGE_CHANNELS:
        raise InvalidEvent(field, array.shape, f"has {channels} channels; images take 1, 3 or 4")
    if count == 0:
        raise InvalidEvent(field, array.shape, "holds no image")
    return nhwc


def stack(images: list[np.ndarray], field: str = "img_tensor") -> np.ndarray:
    """Images of one shape as one array along a new first axis (a copy, as tensorboardX makes)."""
    import numpy as np

    shapes = {image.shape for image in images}
    if len(shapes) != 1:
        raise InvalidEvent(field, sorted(shapes), "images of a batch must all have one shape")
    return np.stack(images)


def fill_uint8(out: np.ndarray, values: np.ndarray) -> None:
    """Write `values` into the uint8 array `out` as tensorboardX scales them: uint8 as they are,
    any other dtype as values in [0, 1] times 255, truncated. Values outside [0, 1] are clipped
    to it and NaN is 0, as torch.utils.tensorboard clips (tensorboardX casts them unsafely: they
    wrap around)."""
    import numpy as np

    if values.dtype == np.uint8:
        np.copyto(out, values)
        return
    unit = np.fmax(values, 0.0)  # fmax, not maximum: NaN becomes 0; ints and bools become float64
    np.fmin(unit, 1.0, out=unit)
    np.multiply(unit, 255.0, out=out, casting="unsafe")


def image_pixels(nhwc: np.ndarray) -> tuple[bytes, int, int, int]:
    """(pixels, height, width, channels) for Image: one image as uint8 HWC bytes, or a batch
    as tensorboardX's grid (8 images a row, the last row filled with black); grayscale stays one
    channel. A few vectorized numpy passes over the pixels, on the calling thread."""
    import numpy as np

    count, height, width, channels = nhwc.shape
    if count == 1:
        image = nhwc[0]
        if image.dtype != np.uint8:
            image = np.empty(image.shape, np.uint8)
            fill_uint8(image, nhwc[0])
        return image.tobytes(), height, width, channels  # tobytes reads any strides: one copy
    columns = min(count, _GRID_COLUMNS)
    rows, rest = divmod(count, columns)
    canvas = np.zeros((rows + (rest > 0), height, columns, width, channels), np.uint8)  # rows of HW(C) strips
    tiles = canvas.transpose(0, 2, 1, 3, 4)  # (row, column, H, W, C): a view of the canvas
    if rows:
        fill_uint8(tiles[:rows], nhwc[: rows * columns].reshape(rows, columns, height, width, channels))
    if rest:
        fill_uint8(tiles[rows, :rest], nhwc[rows * columns :])
    return canvas.tobytes(), canvas.shape[0] * height, columns * width, channels


def figure_rgb(figure: Any, close: bool) -> np.ndarray:
    """A matplotlib figure rendered as uint8 HWC RGB (alpha dropped, as tensorboardX does), on
    the calling thread: matplotlib is not thread-safe. A view of the canvas's buffer, valid until
    the figure is drawn again: copy it before. A figure whose canvas cannot render to pixels (a
    PDF or SVG backend, or none) is given an Agg canvas, as tensorboardX does."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas: Any = figure.canvas if isinstance(figure.canvas, FigureCanvasAgg) else FigureCanvasAgg(figure)
    canvas.draw()
    rgb = np.asarray(canvas.buffer_rgba())[:, :, :3]  # the view keeps the buffer alive past close
    if close:
        close_figure(figure)
    return rgb


def close_figure(figure: Any) -> None:
    """pyplot.close(figure), as tensorboardX's close=True does. Without pyplot imported, no figure
    is registered with it: there is nothing to close (and no backend to start)."""
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        pyplot.close(figure)
