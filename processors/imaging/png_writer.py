"""PNG files written fast, for the images Lightbox stores for its own stages (generated outputs).

Pillow's PNG encoder tries every filter on every row and keeps the best, and that choice cannot
be turned off: it costs more than the compression (a 512 px composite: 16.5-18 ms a file at zlib
level 1, of which about 10 ms is picking filters). Here every row takes the Up filter and the
deflate stream comes from ISA-L (python-isal) at level 1: 2.5-3 ms for files of the same size
(tests/bench/bench_png.py; docs/decisions.md says why this is written here).

The files are ordinary, non-interlaced 8-bit PNGs (grey, grey with alpha, RGB, RGBA) that any
decoder reads, with the image's ICC profile kept. Anything else (palettes, 16-bit, a colour key)
goes through Pillow.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from isal import isal_zlib
from PIL import Image

SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOUR_TYPES = {"L": 0, "LA": 4, "RGB": 2, "RGBA": 6}
_UP = 2  # PNG filter type 2: each byte minus the byte above it
# ISA-L's level 1: as small as zlib's level 1 here, in a fifth of the time.
_LEVEL = 1


def encode_png(image: Image.Image) -> bytes:
    """``image`` as PNG bytes: pixel for pixel what it holds, decoded by any PNG reader."""
    colour_type = _COLOUR_TYPES.get(image.mode)
    if colour_type is None or "transparency" in image.info or image.width == 0 or image.height == 0:
        return pillow_png(image)
    rows = np.asarray(image, dtype=np.uint8).reshape(image.height, -1)
    scanlines = np.empty((image.height, rows.shape[1] + 1), dtype=np.uint8)
    scanlines[:, 0] = _UP
    scanlines[0, 1:] = rows[0]  # the first row's "above" is zeros
    # uint8 arithmetic wraps modulo 256, which is what the filter is defined as.
    np.subtract(rows[1:], rows[:-1], out=scanlines[1:, 1:])
    header = struct.pack(">IIBBBBB", image.width, image.height, 8, colour_type, 0, 0, 0)
    chunks = [_chunk(b"IHDR", header)]
    icc = image.info.get("icc_profile")
    if icc:
        # Profile name, a NUL, compression method 0 (deflate), the compressed profile.
        chunks.append(_chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc)))
    chunks.append(_chunk(b"IDAT", isal_zlib.compress(scanlines, _LEVEL)))
    chunks.append(_chunk(b"IEND", b""))
    return SIGNATURE + b"".join(chunks)


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(data, zlib.crc32(kind))
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def pillow_png(image: Image.Image) -> bytes:
    """Pillow's encoder at zlib level 1: the modes this writer leaves to it."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
