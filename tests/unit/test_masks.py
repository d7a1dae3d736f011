from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from processors.imaging.masks import (
    compute_mask,
    fill_holes,
    keep_largest_components,
    mask_coverage,
)


def _iou(mask: Image.Image, truth: Image.Image) -> float:
    a = np.asarray(mask) >= 128
    b = np.asarray(truth) >= 128
    return float((a & b).sum() / (a | b).sum())


def _jpeg(image: Image.Image, quality: int = 85) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue()))


def _studio_shot() -> tuple[Image.Image, Image.Image]:
    """A product on an off-white backdrop, with an interior highlight that must not be a hole."""
    photo = Image.new("RGB", (192, 192), (248, 248, 246))
    truth = Image.new("L", photo.size, 0)
    for canvas, colour, hole in ((photo, (190, 40, 44), (248, 248, 246)), (truth, 255, 255)):
        draw = ImageDraw.Draw(canvas)
        draw.ellipse((40, 30, 150, 160), fill=colour)
        draw.rectangle((150, 80, 172, 100), fill=colour)  # a handle touching the body
        draw.ellipse((80, 70, 110, 100), fill=hole)  # backdrop-coloured highlight inside
    return photo, truth


def test_segmentation_matches_drawn_shape_on_jpeg_backdrop() -> None:
    photo, truth = _studio_shot()
    mask = compute_mask(_jpeg(photo))
    assert mask.mode == "L" and mask.size == photo.size
    assert _iou(mask, truth) > 0.9


def test_segmentation_tolerates_a_graded_backdrop() -> None:
    photo, truth = _studio_shot()
    ramp = np.linspace(226, 250, photo.height, dtype=np.float32)[:, None, None]
    pixels = np.asarray(photo, dtype=np.float32)
    backdrop = np.all(np.asarray(truth)[..., None] == 0, axis=-1)
    graded = np.where(backdrop[..., None], np.broadcast_to(ramp, pixels.shape), pixels)
    mask = compute_mask(Image.fromarray(graded.astype(np.uint8)))
    assert _iou(mask, truth) > 0.9


def test_alpha_channel_is_used_when_it_is_a_cutout() -> None:
    image = Image.new("RGBA", (64, 64), (255, 255, 255, 0))
    ImageDraw.Draw(image).rectangle((10, 20, 40, 50), fill=(10, 200, 30, 255))
    mask = compute_mask(image)
    assert np.array_equal(np.asarray(mask), np.asarray(image.getchannel("A")))


def test_all_opaque_alpha_falls_back_to_segmentation() -> None:
    photo, truth = _studio_shot()
    mask = compute_mask(photo.convert("RGBA"))
    assert _iou(mask, truth) > 0.9


def test_palette_transparency_counts_as_alpha() -> None:
    drawn = Image.new("P", (48, 48), 0)
    drawn.putpalette([255, 255, 255, 200, 0, 0])
    ImageDraw.Draw(drawn).ellipse((8, 8, 40, 40), fill=1)
    buffer = io.BytesIO()
    drawn.save(buffer, "PNG", transparency=0)  # index 0 (white) is transparent: a GIF-style cutout
    palette = Image.open(io.BytesIO(buffer.getvalue()))
    assert palette.mode == "P" and "transparency" in palette.info
    truth = drawn.point(lambda v: 255 if v == 1 else 0, mode="L")
    assert _iou(compute_mask(palette), truth) > 0.99


def test_featureless_image_is_all_product() -> None:
    mask = compute_mask(Image.new("RGB", (40, 30), (120, 130, 140)))
    assert mask_coverage(mask) == pytest.approx(1.0)


def test_specks_are_dropped_and_separate_large_parts_kept() -> None:
    photo = Image.new("RGB", (160, 120), (255, 255, 255))
    draw = ImageDraw.Draw(photo)
    draw.rectangle((10, 30, 60, 100), fill=(30, 30, 30))  # left shoe
    draw.rectangle((90, 30, 140, 100), fill=(30, 30, 30))  # right shoe
    draw.rectangle((150, 5, 152, 7), fill=(0, 0, 0))  # dust
    binary = np.asarray(compute_mask(photo)) >= 128
    assert binary[60, 35] and binary[60, 115]
    assert not binary[6, 151]


def test_fill_holes_and_components_helpers() -> None:
    ring = np.zeros((20, 20), dtype=bool)
    ring[4:16, 4:16] = True
    ring[8:12, 8:12] = False
    assert fill_holes(ring)[10, 10]
    notch = ring.copy()
    notch[9:11, 4:8] = False  # a channel from the hole to the outside: no longer a hole
    assert not fill_holes(notch)[10, 10]

    blobs = np.zeros((20, 20), dtype=bool)
    blobs[1:9, 1:9] = True
    blobs[15, 15] = True
    kept = keep_largest_components(blobs, keep_ratio=0.1, max_components=8)
    assert kept[4, 4] and not kept[15, 15]


def test_mask_coverage() -> None:
    mask = Image.new("L", (10, 10), 0)
    mask.paste(255, (0, 0, 5, 10))
    assert mask_coverage(mask) == pytest.approx(0.5)
    assert mask_coverage(Image.new("L", (4, 4), 0)) == 0.0


def test_mask_coverage_counts_soft_edges_partially_in_any_mode() -> None:
    rng = np.random.default_rng(5)
    values = rng.integers(0, 256, (37, 53), dtype=np.uint8)
    mask = Image.fromarray(values, "L")
    assert mask_coverage(mask) == pytest.approx(values.mean() / 255.0)
    assert mask_coverage(mask.convert("RGB")) == pytest.approx(values.mean() / 255.0, abs=1e-3)
