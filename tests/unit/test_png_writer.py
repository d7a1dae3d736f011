"""The generated images' PNG writer: every file is a valid PNG that decodes to the very pixels
written, in every mode it writes itself, and the modes it does not write still come out right."""

from __future__ import annotations

import hashlib
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageCms

from gpu_workers.outputs import encode_png as encode_generated
from processors.imaging.png_writer import SIGNATURE, encode_png


def _noise(mode: str, size: tuple[int, int], seed: int = 0) -> Image.Image:
    bands = len(mode)
    rng = np.random.default_rng(seed)
    # Smooth gradients plus grain: every filter and byte value shows up, with wrap-around.
    y, x = np.mgrid[0 : size[1], 0 : size[0]]
    base = (x * 7 + y * 3)[..., None] + np.arange(bands) * 85
    pixels = (base + rng.integers(0, 256, (size[1], size[0], bands))) % 256
    array = pixels.astype(np.uint8)
    return Image.fromarray(array[..., 0] if bands == 1 else array, mode)


def _chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, data) of every chunk, each CRC checked."""
    assert data.startswith(SIGNATURE)
    chunks, at = [], len(SIGNATURE)
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind, body = data[at + 4 : at + 8], data[at + 8 : at + 8 + length]
        (crc,) = struct.unpack(">I", data[at + 8 + length : at + 12 + length])
        assert crc == zlib.crc32(kind + body), kind
        chunks.append((kind, body))
        at += 12 + length
    return chunks


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA"])
@pytest.mark.parametrize("size", [(1, 1), (1, 7), (7, 1), (33, 17), (512, 512)])
def test_decodes_to_the_pixels_written(mode: str, size: tuple[int, int]) -> None:
    image = _noise(mode, size)
    data = encode_png(image)
    with Image.open(io.BytesIO(data)) as check:
        check.verify()  # Pillow's own CRC and structure checks
    with Image.open(io.BytesIO(data)) as decoded:
        assert decoded.format == "PNG"
        assert decoded.mode == mode
        assert decoded.size == size
        assert np.array_equal(np.asarray(decoded), np.asarray(image))


def test_every_row_takes_the_up_filter_and_the_file_ends() -> None:
    image = _noise("RGB", (40, 9))
    kinds = [kind for kind, _ in _chunks(encode_png(image))]
    assert kinds == [b"IHDR", b"IDAT", b"IEND"]
    idat = dict(_chunks(encode_png(image)))[b"IDAT"]
    rows = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(9, 1 + 40 * 3)
    assert set(rows[:, 0]) == {2}


def test_an_icc_profile_is_kept() -> None:
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    image = _noise("RGB", (16, 16))
    image.info["icc_profile"] = profile
    with Image.open(io.BytesIO(encode_png(image))) as decoded:
        assert decoded.info.get("icc_profile") == profile
        assert np.array_equal(np.asarray(decoded), np.asarray(image))


@pytest.mark.parametrize("mode", ["P", "I;16", "1"])
def test_other_modes_go_through_pillow(mode: str) -> None:
    image = _noise("L", (20, 10)).convert(mode)
    with Image.open(io.BytesIO(encode_png(image))) as decoded:
        assert decoded.mode == image.mode
        assert np.array_equal(np.asarray(decoded), np.asarray(image))


def test_a_colour_key_goes_through_pillow() -> None:
    image = _noise("RGB", (12, 12))
    image.info["transparency"] = (1, 2, 3)
    with Image.open(io.BytesIO(encode_png(image))) as decoded:
        assert decoded.info.get("transparency") == (1, 2, 3)


def test_the_generated_images_key_digest_is_of_these_bytes() -> None:
    image = _noise("RGB", (64, 64))
    encoded = encode_generated(image)
    assert encoded.data == encode_png(image)
    assert encoded.sha256 == hashlib.sha256(encoded.data).hexdigest()
