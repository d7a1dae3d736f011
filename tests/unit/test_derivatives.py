from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image

from processors.channels.presets import DEFAULT_CHANNEL, derivatives_for, load_presets
from processors.imaging.derivatives import (
    DerivativeSpec,
    Metadata,
    derivative_name,
    frame,
    read_lineage,
    render,
    render_derivative,
    srgb_profile_bytes,
    to_srgb,
)
from processors.imaging.framing import mask_box
from processors.provenance.xmp import read_xmp

LINEAGE = {
    "job_id": "job-123",
    "model_version": "compositor-1.0.0",
    "seed": "42",
    "template": "studio-hero@3",
    # Characters that have to survive JSON, XML attribute quoting and ASCII-only EXIF.
    "note": "quote \" apostrophe ' <tag> & ümlaut",
}

ALL_SPECS = [p.spec for presets in load_presets().channels.values() for p in presets]


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
    assert derivatives_for("unknown-channel") == derivatives_for(DEFAULT_CHANNEL)
    names = [derivative_name("j", s) for s in ALL_SPECS]
    assert len(set(names)) == len(names)


# --- framing that keeps the product in frame ---------------------------------------------------


Box = tuple[int, int, int, int]


def _scene_with_product(
    size: tuple[int, int], box: tuple[int, int, int, int]
) -> tuple[Image.Image, Image.Image]:
    """A grey scene with a red product in ``box``, and the product's mask."""
    image = Image.new("RGB", size, (150, 150, 150))
    image.paste((220, 20, 20), box)
    mask = Image.new("L", size, 0)
    mask.paste(255, box)
    return image, mask


def _same_box(a: Box | None, b: Box | None) -> bool:
    """Equal within the one pixel of resampled edge that the mask's threshold may count."""
    return a is not None and b is not None and all(abs(x - y) <= 1 for x, y in zip(a, b, strict=True))


def _red_box(image: Image.Image) -> Box | None:
    pixels = np.asarray(image.convert("RGB")).astype(int)
    red = (pixels[..., 0] > 180) & (pixels[..., 1] < 80)
    ys, xs = np.nonzero(red)
    return None if xs.size == 0 else (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)


def test_cover_moves_the_crop_to_keep_an_off_centre_product_in_frame() -> None:
    # A wide image with the product at its far left: a centred square crop would cut it off.
    image, mask = _scene_with_product((1200, 400), (20, 100, 220, 300))
    spec = DerivativeSpec("c", 300, 300, "cover", "PNG", margin=0.05)
    centred, _ = frame(image, spec)  # no mask known: the centre, as before
    assert _red_box(centred) is None
    pixels, moved_mask = frame(image, spec, mask)
    box = _red_box(pixels)
    assert box is not None and box[0] >= 0.05 * 300 - 1 and box[2] <= 300
    assert (box[2] - box[0], box[3] - box[1]) == (150, 150)  # whole: 200 px at the cover scale 0.75
    assert moved_mask is not None and _same_box(mask_box(moved_mask), box)


def test_cover_zooms_out_when_the_product_is_wider_than_the_crop() -> None:
    # 9:16 story from a square image whose product spans most of its width.
    image, mask = _scene_with_product((1000, 1000), (50, 400, 950, 600))
    spec = DerivativeSpec("story", 270, 480, "cover", "PNG", margin=0.05)
    pixels, moved = frame(image, spec, mask)
    box = _red_box(pixels)
    assert box is not None
    margin = 0.05 * 270
    assert box[0] >= margin - 1 and box[2] <= 270 - margin + 1, box  # all of it, inside the margin
    assert moved is not None and _same_box(mask_box(moved), box)


def test_product_fit_cuts_the_product_out_onto_white_at_its_fill() -> None:
    image, mask = _scene_with_product((800, 600), (100, 200, 300, 500))  # 200 x 300 product
    spec = DerivativeSpec("m", 1000, 1000, "product", "JPEG", 95, fill=0.9, background="white")
    pixels, moved = frame(image, spec, mask)
    box = _red_box(pixels)
    assert box is not None and box[3] - box[1] == 900  # its longer side at 90% of the frame
    assert abs((box[0] + box[2]) / 2 - 500) <= 1 and abs((box[1] + box[3]) / 2 - 500) <= 1
    outside = np.asarray(pixels)[:40, :, :]
    assert (outside == 255).all()  # the scene's grey is gone: only white around the product
    assert moved is not None and _same_box(mask_box(moved), box)


def test_png_product_fit_keeps_a_transparent_background_when_asked_for_auto() -> None:
    image, mask = _scene_with_product((400, 400), (100, 100, 300, 300))
    pixels, _ = frame(image, DerivativeSpec("cut", 200, 200, "product", "PNG", fill=0.5), mask)
    assert pixels.mode == "RGBA"
    assert pixels.getpixel((5, 5))[3] == 0 and pixels.getpixel((100, 100))[3] == 255


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_every_format_declares_its_digital_source_type_and_checks_in_xmp(fmt: str) -> None:
    source_type = "http://cv.iptc.org/newscodes/digitalsourcetype/compositeSynthetic"
    metadata = Metadata(LINEAGE, source_type, '[{"rule":"r","passed":true}]')
    data = render(_image(), DerivativeSpec("t", 40, 40, "cover", fmt), metadata).data  # type: ignore[arg-type]
    fields = read_xmp(data)
    assert fields.digital_source_type == source_type
    assert fields.channel_checks_json == '[{"rule":"r","passed":true}]'
    assert read_lineage(data) == LINEAGE


def test_rendering_with_a_mask_is_deterministic_and_the_mask_follows_the_pixels() -> None:
    image, mask = _scene_with_product((640, 480), (400, 60, 600, 420))
    spec = DerivativeSpec("t", 200, 200, "cover", "WEBP")
    first = render(image, spec, Metadata(LINEAGE), mask)
    again = render(image, spec, Metadata(LINEAGE), mask)
    assert first.data == again.data
    assert first.product_mask is not None and again.product_mask is not None
    assert first.product_mask.tobytes() == again.product_mask.tobytes()


def test_a_mask_of_another_size_is_refused() -> None:
    with pytest.raises(ValueError, match="product mask"):
        frame(_image(), DerivativeSpec("t", 10, 10, "cover", "PNG"), Image.new("L", (5, 5)))
