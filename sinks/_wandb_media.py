"""W&B media objects of the Audio and Video events, made on the W&B sink's call thread.

`wandb.Audio` of raw samples needs soundfile and `wandb.Video` of raw frames needs moviepy; both
also take a file. So the sink gives wandb the WAV file metricbus writes (`encode_wav`) and the GIF
the TensorBoard sink writes (`encode_gif`): one encoding of each clip for every backend.
"""

from __future__ import annotations

import io
import itertools
import os
import tempfile
from typing import Any

from bus import Audio, Video

from ._audio import encode_wav
from ._video import encode_gif

__all__ = ["wandb_audio", "wandb_video"]

_files = itertools.count()
_folder: tempfile.TemporaryDirectory[str] | None = None  # removed at exit; wandb copies what it logs


def _temporary_path(suffix: str) -> str:
    global _folder
    if _folder is None:
        _folder = tempfile.TemporaryDirectory(prefix="metricbus-wandb-")
    return os.path.join(_folder.name, f"{next(_files)}{suffix}")


def wandb_audio(wandb: Any, event: Audio) -> Any:
    """A wandb.Audio of the clip, from a WAV file of its samples."""
    path = _temporary_path(".wav")
    with open(path, "wb") as file:
        file.write(encode_wav(event.samples, event.channels, event.sample_rate))
    audio = wandb.Audio(path, sample_rate=event.sample_rate)
    # What wandb.Audio(samples, sample_rate) records of a clip made from samples (a list of clips
    # reports each clip's duration); a clip made from a path leaves it unset.
    audio._duration = event.frames / event.sample_rate
    return audio


def wandb_video(wandb: Any, event: Video) -> Any:
    """A wandb.Video of the clip, as the animated GIF TensorBoard gets."""
    return wandb.Video(io.BytesIO(encode_gif(event)), format="gif")
