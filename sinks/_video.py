"""encode_gif: a Video event's frames as an animated GIF, for the sinks that store clips
(TensorBoard image summaries, `wandb.Video`, MLflow artifacts), off the training thread.

tensorboardX's own encoder (`tensorboardX.summary.make_video`, which drives moviepy) makes the
GIF, so a clip looks in TensorBoard as tensorboardX would have written it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bus import Video

__all__ = ["encode_gif"]

_MAX_FPS = 100.0  # a GIF times frames in 1/100 s; at absurd rates moviepy writes no frame at all


def encode_gif(video: Video) -> bytes:
    """The GIF tensorboardX writes for these frames (1-channel frames become grey RGB), at
    most 100 frames a second, the fastest a GIF can show."""
    import numpy as np
    from tensorboardX.summary import make_video

    frames = np.frombuffer(video.frames, np.uint8).reshape(video.length, video.height, video.width, video.channels)
    image = make_video(frames, min(video.fps, _MAX_FPS))
    if image is None:  # tensorboardX logs the cause: moviepy is missing or cannot be imported
        raise ImportError("encoding a Video needs moviepy in the sink's process: pip install moviepy")
    return bytes(image.encoded_image_string)
