"""encode_wav: 16-bit PCM samples as a WAV file, with the standard library's `wave` module, for
the sinks that store sound (TensorBoard audio summaries, `wandb.Audio`, MLflow artifacts), off
the training thread. The same 44-byte header soundfile writes for tensorboardX."""

from __future__ import annotations

import io
import wave

__all__ = ["encode_wav"]


def encode_wav(samples: bytes, channels: int, sample_rate: int) -> bytes:
    """A WAV file of little-endian int16 `samples`, `channels` interleaved, at `sample_rate` Hz."""
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(samples)
    return out.getvalue()
