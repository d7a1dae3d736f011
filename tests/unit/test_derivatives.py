from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image

from processors.imaging.derivatives import (
    CHANNEL_DERIVATIVES,
    DerivativeSpec,
    derivative_name,
    derivatives_for,
    read_lineage,
    render_derivative,
    srgb_profile_bytes,
    to_srgb,
)

LINEAGE = {
    "job_id": "job-123",
    "model_version": "compositor-1.0.0",
    "seed": "42",
    "template": "studio-hero@3",
    # Characters that have to survive JSON, XML attribute quoting and ASCII-only EXIF.
    "note": "quote \" apostrophe ' <tag> & ümlaut",
}

ALL_SPECS = [spec for specs in CHANNEL_DERIVATIVES.values() for spec in specs]


def _swapped_srgb_profile() -> bytes:
    """sRGB with the red and blue colorants swapped: red pixels tagged with it are really blue.

    A built-in way to get a non-sRGB RGB profile without shipping an ICC file.
    """
    data = bytearray(srgb_profile_bytes())
    (count,) = struct.unpack(">I", data[128:132])
    offsets = {bytes(data[132 + 12 * i : 136 + 12 * i]): 132 + 12 * i for i in range(count)}
    red, blue = offsets[b"rXYZ"], offsets[b"bXYZ"]
    data[red + 4 : red + 12], data[blue + 4 : blue + 12] = (
        data[blue + 4 : blue + 12],
        data[red + 4 : red + 12],
    )
    return bytes(data)


def _image(size: tuple[int, int] = (60, 40), alpha: bool = False) -> Image.Image:
    rng = np.random.default_rng(3)
    channels = 4 if alpha else 3
    pixels = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    if alpha:
        pixels[..., 3] = 255
        pixels[: size[1] // 2, :, 3] = 0  # top half transparent
    return Image.fromarray(pixels, mode="RGBA" if alpha else "RGB")


@pytest.mark.parametrize("spec", ALL_SPECS, ids=lambda s: s.name)
def test_every_channel_derivative_has_its_size_format_and_lineage(spec: DerivativeSpec) -> None:
    # Smooth content: upscaled noise would make this test about zlib speed.
    smooth = Image.merge("RGB", [Image.linear_gradient("L").resize((60, 40))] * 3)
    data = render_derivative(smooth, spec, LINEAGE)
    decoded = Image.open(io.BytesIO(data))
    assert decoded.format == spec.format
    assert decoded.size == (spec.width, spec.height)
    assert decoded.info.get("icc_profile") == srgb_profile_bytes()
    assert read_lineage(data) == LINEAGE


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_lineage_round_trips_and_rendering_is_deterministic(fmt: str) -> None:
    spec = DerivativeSpec("t", 48, 32, "cover", fmt)  # type: ignore[arg-type]
    first = render_derivative(_image(), spec, LINEAGE)
    assert read_lineage(first) == LINEAGE
    assert render_derivative(_image(), spec, LINEAGE) == first
    assert render_derivative(_image(), spec, {**LINEAGE, "seed": "43"}) != first


def test_jpeg_lineage_survives_losing_the_xmp_packet() -> None:
    data = render_derivative(_image(), DerivativeSpec("t", 32, 32, "cover", "JPEG"), LINEAGE)
    original = Image.open(io.BytesIO(data))
    buffer = io.BytesIO()
    original.save(buffer, "JPEG", exif=original.info["exif"])  # re-encoded: EXIF kept, XMP gone
    assert "xmp" not in Image.open(io.BytesIO(buffer.getvalue())).info
    assert read_lineage(buffer.getvalue()) == LINEAGE


def test_files_without_lineage_read_as_empty() -> None:
    buffer = io.BytesIO()
    _image().save(buffer, "PNG")
    assert read_lineage(buffer.getvalue()) == {}


def test_embedded_icc_profile_is_converted_to_srgb() -> None:
    tagged = Image.new("RGB", (16, 16), (255, 0, 0))
    tagged.info["icc_profile"] = _swapped_srgb_profile()
    converted = to_srgb(tagged, keep_alpha=False)
    red, green, blue = converted.getpixel((8, 8))
    assert blue > 240 and red < 15 and green < 15

    data = render_derivative(tagged, DerivativeSpec("t", 16, 16, "cover", "PNG"), {})
    assert Image.open(io.BytesIO(data)).convert("RGB").getpixel((8, 8))[2] > 240


def test_broken_icc_profile_is_ignored() -> None:
    tagged = Image.new("RGB", (8, 8), (10, 200, 30))
    tagged.info["icc_profile"] = b"definitely not a profile"
    assert to_srgb(tagged, keep_alpha=False).getpixel((4, 4)) == (10, 200, 30)


def test_jpeg_flattens_alpha_on_white_and_png_keeps_it() -> None:
    image = _image(size=(40, 40), alpha=True)
    jpeg = render_derivative(image, DerivativeSpec("t", 40, 40, "cover", "JPEG", 95), {})
    top = Image.open(io.BytesIO(jpeg)).getpixel((20, 5))
    assert min(top) > 240  # transparent area became white, not black

    png = Image.open(io.BytesIO(render_derivative(image, DerivativeSpec("t", 40, 40, "cover", "PNG"), {})))
    assert png.mode == "RGBA"
    assert png.getpixel((20, 5))[3] == 0 and png.getpixel((20, 35))[3] == 255


def test_contain_pads_with_white_and_cover_crops_the_centre() -> None:
    wide = Image.new("RGB", (300, 100), (200, 0, 0))
    wide.paste((0, 0, 200), (100, 0, 200, 100))  # the middle third is blue
    contain = render_derivative(wide, DerivativeSpec("c", 90, 90, "contain", "PNG"), {})
    padded = Image.open(io.BytesIO(contain)).convert("RGB")
    assert padded.size == (90, 90)
    assert padded.getpixel((45, 2)) == (255, 255, 255)  # letterbox above the image
    assert padded.getpixel((45, 45)) == (0, 0, 200)

    cover = render_derivative(wide, DerivativeSpec("c", 60, 60, "cover", "PNG"), {})
    cropped = Image.open(io.BytesIO(cover)).convert("RGB")
    assert cropped.getpixel((5, 30)) == (0, 0, 200) and cropped.getpixel((55, 30)) == (0, 0, 200)


def test_names_are_deterministic_and_channels_have_specs() -> None:
    web = derivatives_for("web")
    assert {s.format for s in web} == {"JPEG", "WEBP"}
    assert derivative_name("job-9", web[0]) == "job-9/web-800.jpg"
    assert derivative_name("job-9", web[1]) == "job-9/web-thumb-400.webp"
    assert derivatives_for("marketplace")[0].width == 1000
    assert (derivatives_for("social")[0].width, derivatives_for("social")[0].height) == (1080, 1350)
    assert derivatives_for("unknown-channel") == CHANNEL_DERIVATIVES["default"]
    names = [derivative_name("j", s) for s in ALL_SPECS]
    assert len(set(names)) == len(names)
