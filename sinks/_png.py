"""encode_png: uint8 HWC pixels as a PNG, with zlib and struct only (no PIL), for the sinks that
store images (TensorBoard image summaries, MLflow artifacts), off the training thread."""

from __future__ import annotations

import struct
import zlib

__all__ = ["encode_png"]

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_COLOR_TYPES = {1: 0, 3: 2, 4: 6}  # channels -> PNG colour type: grayscale, RGB, RGBA
_PNG_HEADER = struct.Struct(">IIBBBBB")  # width, height, bit depth, colour type, compression, filter, interlace


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_png(pixels: bytes, height: int, width: int, channels: int) -> bytes:
    """A PNG of uint8 HWC pixels (1, 3 or 4 channels), 8 bits per sample, not interlaced.

    Every row is stored unfiltered (filter byte 0) and the whole is deflated by zlib at level 6
    (PIL's default): any PNG reader decodes the exact pixels. PIL's adaptive row filters would compress photos
    somewhat better; this needs no PIL, and costs one join and one zlib call.
    """
    stride = width * channels
    view = memoryview(pixels)
    rows = b"\x00" + b"\x00".join(view[start : start + stride] for start in range(0, height * stride, stride))
    header = _PNG_HEADER.pack(width, height, 8, _PNG_COLOR_TYPES[channels], 0, 0, 0)
    return (
        _PNG_SIGNATURE
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(rows, 6))
        + _png_chunk(b"IEND", b"")
    )
