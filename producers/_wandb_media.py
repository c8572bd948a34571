"""W&B's data types for `producers.wandb`: Histogram, Image and Audio become events; the others are refused.

`Histogram` keeps raw values (the sinks bin them, off the training thread, as wandb would: 64 bins)
or, when wandb would bin them differently (another `num_bins`, a precomputed `np_histogram`, a
float32 array), the bins wandb computes. `Image` converts its data as wandb 0.31 does (arrays cast
to uint8, trivial dimensions squeezed, torch tensors CHW) into raw pixels; the sinks encode PNG.
`Audio` takes an array of samples in [-1, 1] and keeps 16-bit PCM frames (as SummaryWriter's
add_audio does); the sinks write the WAV. Video, Table and W&B's other media have no event kind
here: constructing one raises `InvalidEvent` naming what to log instead, so nothing is dropped
without a word.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, NoReturn

import bus
from bus import InvalidEvent, Origin

__all__ = [
    "REFUSED",
    "Audio",
    "Histogram",
    "Image",
    "json_friendly",
]

log = logging.getLogger("metricbus")

#: wandb.Histogram's default and largest number of bins.
DEFAULT_BINS, MAX_BINS = 64, 512
#: Up to this many values travel raw (the sinks bin them exactly as wandb does, off this thread);
#: beyond it numpy bins them here: ~8 ms per million values, against ~120 ms to check a million
#: values into an event.
RAW_LIMIT = 10_000
#: PIL modes an Image event holds, by channel count.
_MODES = {1: "L", 3: "RGB", 4: "RGBA"}


def _numpy(data: Any) -> Any:
    """`data` as a numpy array: a torch tensor detached and moved to the CPU first."""
    import numpy as np

    detach = getattr(data, "detach", None)
    if detach is not None:
        data = detach().cpu().numpy()
    elif hasattr(data, "numpy") and not isinstance(data, np.ndarray):  # TF eager tensors
        data = data.numpy()
    return np.asarray(data)


class Histogram:
    """wandb.Histogram(sequence=None, np_histogram=None, num_bins=64).

    With the default 64 bins and up to RAW_LIMIT values of int or float64, the values travel raw
    and each sink bins them (the W&B sink with wandb's own code, so the bins are wandb's);
    otherwise they are binned here, with numpy, as wandb bins them, and travel as buckets (whose
    first edge the W&B sink rebuilds from the bin width). `histogram` and `bins` are wandb's
    counts and edges.
    """

    MAX_LENGTH: ClassVar[int] = MAX_BINS

    def __init__(self, sequence: Any = None, np_histogram: Any = None, num_bins: int = DEFAULT_BINS) -> None:
        self._values: tuple[float, ...] | None = None
        self._counts: list[float] | None = None
        self._edges: list[float] | None = None
        if np_histogram is not None:
            if len(np_histogram) != 2:
                raise InvalidEvent("np_histogram", np_histogram, "must be (counts, bin_edges), as np.histogram returns")
            self._counts, self._edges = list(_numpy(np_histogram[0]).tolist()), list(_numpy(np_histogram[1]).tolist())
        elif sequence is None:
            raise InvalidEvent("sequence", sequence, "give a sequence of values or np_histogram=(counts, bin_edges)")
        else:
            array = _numpy(sequence)
            if (
                num_bins == DEFAULT_BINS
                and array.size <= RAW_LIMIT
                and (array.dtype.kind in "iu" or array.dtype == "float64")
            ):
                self._values = tuple(array.ravel().tolist())  # checked below, when the event is built
            else:  # binned here as wandb bins them (in their own dtype); numpy is faster than events of values
                import numpy as np

                try:
                    counts, edges = np.histogram(array, bins=num_bins)
                except (ValueError, TypeError) as exc:
                    raise InvalidEvent("sequence", sequence, f"cannot be binned ({exc})") from exc
                self._counts, self._edges = counts.tolist(), edges.tolist()
        if self._counts is not None and self._edges is not None:
            if len(self._counts) > MAX_BINS:
                raise InvalidEvent(
                    "np_histogram", np_histogram, f"has {len(self._counts)} bins; wandb takes {MAX_BINS}"
                )
            if len(self._counts) + 1 != len(self._edges):
                raise InvalidEvent("np_histogram", np_histogram, "needs one more bin edge than counts")
        self.event("histogram", 0)  # refuse bad values here, at the call that made them

    @property
    def histogram(self) -> list[float]:
        """The counts per bin (binned now when the values are raw)."""
        return self._binned()[0]

    @property
    def bins(self) -> list[float]:
        """The bin edges, one more than the counts."""
        return self._binned()[1]

    def _binned(self) -> tuple[list[float], list[float]]:
        if self._counts is None or self._edges is None:
            import numpy as np

            counts, edges = np.histogram([v for v in self._values or () if math.isfinite(v)], bins=DEFAULT_BINS)
            return counts.tolist(), edges.tolist()
        return self._counts, self._edges

    def event(self, name: str, step: int, *, origin: Origin = bus.DEFAULT_ORIGIN) -> bus.Histogram:
        """The Histogram event of this value at `step`."""
        if self._values is not None:
            return bus.Histogram(name, step, values=self._values, origin=origin)
        limits, counts = tuple((self._edges or [])[1:]), tuple(self._counts or ())
        return bus.Histogram(name, step, bucket_limits=limits, bucket_counts=counts, origin=origin)

    def __repr__(self) -> str:
        return f"Histogram({len(self._values) if self._values is not None else len(self._counts or ())} items)"


class Image:
    """wandb.Image(data_or_path, mode=None, caption=None, ...) as raw pixels, converted here as
    wandb 0.31 converts them: numpy arrays squeezed and cast to uint8 (no scaling), torch tensors
    read as CHW, PIL images as they are (other modes converted to L, RGB or RGBA), a matplotlib
    figure (or pyplot itself) rendered to PNG as wandb renders it, a path read with PIL.

    The sinks encode the PNG (W&B writes it as a `wandb.Image`). Not kept: `caption` (a warning
    says so once); refused: `boxes`, `masks`, `classes`.
    """

    _warned: ClassVar[set[str]] = set()

    def __init__(
        self,
        data_or_path: Any,
        mode: str | None = None,
        caption: str | None = None,
        grouping: int | None = None,
        classes: Any = None,
        boxes: Any = None,
        masks: Any = None,
        file_type: str | None = None,
    ) -> None:
        for option, value in (("classes", classes), ("boxes", boxes), ("masks", masks)):
            if value is not None:
                raise InvalidEvent(option, value, "is not supported by metricbus: log the annotated image as pixels")
        if caption is not None:
            self._warn_once("caption", "wandb.Image captions are not kept by metricbus (the image is)")
        if file_type not in (None, "png"):
            self._warn_once("file_type", f"wandb.Image(file_type={file_type!r}): metricbus writes PNG")
        self.caption, self.grouping = caption, grouping
        self.pixels, self.height, self.width, self.channels = _pixels(data_or_path, mode)
        self.event("image", 0)  # refuse a bad shape here, at the call that made it

    def event(
        self, name: str, step: int, *, origin: Origin = bus.DEFAULT_ORIGIN, sequence: str | None = None
    ) -> bus.Image:
        """The Image event of this value at `step` (item of the list `sequence`, if given)."""
        return bus.Image(
            name,
            step,
            pixels=self.pixels,
            height=self.height,
            width=self.width,
            channels=self.channels,
            origin=origin,
            sequence=sequence,
        )

    @classmethod
    def _warn_once(cls, key: str, message: str) -> None:
        if key not in cls._warned:
            cls._warned.add(key)
            log.warning("%s", message)

    def __repr__(self) -> str:
        return f"Image({self.width}x{self.height}, {_MODES[self.channels]})"


def _pixels(data: Any, mode: str | None) -> tuple[bytes, int, int, int]:
    """(pixels, height, width, channels) of wandb.Image's data, converted as wandb converts it."""
    from PIL import Image as PILImage

    pil = _as_pil(data, mode)
    if pil is None:
        array = _array_pixels(data)
        guessed = {2: "L"}.get(array.ndim) or _MODES.get(array.shape[-1], "")
        if array.ndim not in (2, 3) or not guessed:
            raise InvalidEvent(
                "data_or_path", array.shape, "must be an image of shape HW or HWC with 1, 3 or 4 channels"
            )
        try:
            pil = PILImage.fromarray(array).convert(mode or guessed)
        except (ValueError, TypeError) as exc:
            raise InvalidEvent("mode", mode, f"cannot convert the image ({exc})") from exc
    if pil.mode not in _MODES.values():
        pil = pil.convert("RGBA" if "A" in pil.getbands() or "transparency" in pil.info else "RGB")
    channels = len(pil.getbands())
    return pil.tobytes(), pil.height, pil.width, channels


def _as_pil(data: Any, mode: str | None) -> Any:
    """A PIL image for paths, PIL images and matplotlib figures; None for arrays."""
    from PIL import Image as PILImage

    if isinstance(data, (str, Path)):
        try:
            with PILImage.open(data) as opened:
                opened.load()
                pil = opened.copy()
        except OSError as exc:
            raise InvalidEvent("data_or_path", data, f"cannot be read as an image ({exc})") from exc
    elif isinstance(data, PILImage.Image):
        pil = data
    elif type(data).__module__.startswith("matplotlib") or getattr(data, "__name__", "") == "matplotlib.pyplot":
        figure = data.gcf() if hasattr(data, "gcf") else data
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")  # on this thread: matplotlib is not thread-safe
        buffer.seek(0)
        pil = PILImage.open(buffer)
        pil.load()
    else:
        return None
    return pil.convert(mode) if mode and pil.mode != mode else pil


def _array_pixels(data: Any) -> Any:
    """An array's pixels as wandb 0.31 takes them: a torch tensor is CHW, anything else HWC;
    trivial dimensions squeezed; values cast to uint8 as they are (no scaling)."""
    import numpy as np

    torch_tensor = hasattr(data, "detach") and hasattr(data, "permute")
    try:
        array = _numpy(data)
    except Exception as exc:
        raise InvalidEvent("data_or_path", data, f"cannot be read as an array ({type(exc).__name__})") from exc
    if array.dtype.kind not in "buif":
        raise InvalidEvent("data_or_path", data, f"must hold real numbers, not dtype {array.dtype}")
    if torch_tensor and array.ndim == 3:
        array = array.transpose(1, 2, 0)
    if array.ndim > 2:
        array = array.squeeze()
    return np.ascontiguousarray(array.astype(np.uint8))


class Audio:
    """wandb.Audio(data_or_path, sample_rate=None, caption=None): an array of samples in [-1, 1],
    shape (frames,) or (frames, 1 or 2), and its sample rate (which wandb requires with an
    array). Kept as 16-bit PCM frames, exactly as `SummaryWriter.add_audio` keeps them; the sinks
    write the WAV (W&B as a `wandb.Audio`). A path is refused: read the file and pass the array."""

    def __init__(self, data_or_path: Any, sample_rate: int | None = None, caption: str | None = None) -> None:
        from ._summary_media import audio_samples

        if isinstance(data_or_path, (str, Path)):
            raise InvalidEvent("data_or_path", data_or_path, "a path is not read by metricbus: pass the samples")
        if sample_rate is None:
            raise InvalidEvent("sample_rate", sample_rate, "is required with an array of samples (as in wandb)")
        if caption is not None:
            Image._warn_once("audio caption", "wandb.Audio captions are not kept by metricbus (the sound is)")
        self.samples, self.channels = audio_samples(data_or_path)
        self.sample_rate = sample_rate
        self.event("audio", 0)  # refuse a bad rate here, at the call that made it

    def event(
        self, name: str, step: int, *, origin: Origin = bus.DEFAULT_ORIGIN, sequence: str | None = None
    ) -> bus.Audio:
        """The Audio event of this value at `step` (item of the list `sequence`, if given)."""
        return bus.Audio(
            name,
            step,
            samples=self.samples,
            channels=self.channels,
            sample_rate=self.sample_rate,
            origin=origin,
            sequence=sequence,
        )

    def __repr__(self) -> str:
        frames = len(self.samples) // (2 * self.channels)
        return f"Audio({frames} frames, {self.channels} channel(s), {self.sample_rate} Hz)"


# ---- W&B's other data types: refused, naming what to log instead ----


def _refused(name: str, alternative: str) -> type:
    def __init__(self: object, *args: object, **kwargs: object) -> NoReturn:
        raise InvalidEvent(name, args or kwargs, f"is not supported by metricbus: {alternative}")

    return type(name, (), {"__init__": __init__, "__doc__": f"Refused: {alternative}.", "__module__": __name__})


REFUSED: dict[str, type] = {
    name: _refused(name, alternative)
    for name, alternative in {
        "Video": "log chosen frames as producers.wandb.Image, one name per frame",
        "Table": "log each column as a metric (numbers) or a string (text) per row's step",
        "Html": "log the markup as a string",
        "Object3D": "log a rendering of it as producers.wandb.Image",
        "Molecule": "log a rendering of it as producers.wandb.Image",
        "Plotly": "log the figure rendered as producers.wandb.Image",
        "Graph": "log its statistics as metrics",
        "ImageMask": "log the masked image as producers.wandb.Image",
        "BoundingBoxes2D": "log the annotated image as producers.wandb.Image",
    }.items()
}


# ---- config and summary values as W&B stores them ----


def json_friendly(value: Any, depth: int = 0) -> Any:
    """A value as W&B keeps it in a config or summary: dicts (keys as str), lists (from tuples,
    sequences, numpy arrays, tensors), numbers (numpy and one-element tensors as Python numbers),
    None, bool, str; a slice as its three parts, a dataclass as its fields, anything else as its
    str() (what wandb does with values it cannot store)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value if type(value) in (bool, int, float, str) or value is None else _builtin(value)
    if depth > 60:
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): json_friendly(v, depth + 1) for k, v in value.items()}
    if isinstance(value, slice):
        return {"slice_start": value.start, "slice_step": value.step, "slice_stop": value.stop}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return json_friendly(dataclasses.asdict(value), depth + 1)
    tolist = getattr(value, "tolist", None)
    if tolist is not None and type(value).__module__.split(".")[0] in ("numpy", "torch"):
        return json_friendly(tolist(), depth + 1)  # arrays to lists, numpy scalars to numbers
    if isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        return [json_friendly(v, depth + 1) for v in value]
    return str(value)


def _builtin(value: bool | int | float | str) -> Any:
    """A subclass of a builtin (an IntEnum, a str Enum) as the builtin value."""
    for kind in (bool, int, float, str):
        if isinstance(value, kind):
            return kind(value)
    return value  # pragma: no cover - every caller's value is one of the four


def is_wandb_media(value: object) -> bool:
    """True for an object of real wandb's own data types (wandb.Image, wandb.Histogram, ...)."""
    return type(value).__module__.split(".")[0] == "wandb"
