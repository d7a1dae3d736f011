"""A product that is not there is never taken for one: the references stage's visibility verdict
(references/visibility.py) and the quality gate's product region (imaging/preservation.py,
checks.preservation_scores, failed_reasons' product_missing), on images that show no product."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from gpu_workers.backends.compositor import composite
from processors.imaging.checks import (
    REASON_PRODUCT_MISSING,
    REASON_PRODUCT_NOT_PRESERVED,
    failed_reasons,
    preservation_scores,
    product_preservation,
    product_region,
)
from processors.imaging.masks import compute_mask
from processors.references.visibility import (
    EMPTY_MASK,
    LOW_COVERAGE,
    NO_CONTENT,
    TRANSPARENT,
    UNIFORM,
    ProductMeasures,
    judge,
    measure_product,
)

MIN_COVERAGE = 0.01


def _jpeg(image: Image.Image) -> Image.Image:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=90)
    return Image.open(io.BytesIO(buffer.getvalue()))


def _verdict(image: Image.Image, mask: Image.Image | None = None):  # type: ignore[no-untyped-def]
    return judge(measure_product(image, compute_mask(image) if mask is None else mask), MIN_COVERAGE)


def _packshot() -> Image.Image:
    photo = Image.new("RGB", (256, 256), (250, 250, 248))
    draw = ImageDraw.Draw(photo)
    draw.rounded_rectangle((60, 50, 190, 210), radius=12, fill=(180, 40, 50))
    draw.rectangle((60, 110, 190, 125), fill=(240, 236, 220))
    return photo


def _cutout() -> Image.Image:
    image = Image.new("RGBA", (256, 256), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.ellipse((40, 40, 210, 220), fill=(30, 90, 200, 255))
    draw.rectangle((100, 100, 150, 150), fill=(250, 250, 250, 255))
    return image


# --- the references stage's verdict ---------------------------------------------------------


def test_a_packshot_and_a_cutout_are_visible() -> None:
    for image in (_jpeg(_packshot()), _cutout()):
        verdict = _verdict(image)
        assert verdict.visible, verdict.detail
        assert 0.2 < verdict.coverage < 0.7


def test_a_flat_coloured_cutout_is_visible() -> None:
    """A one-colour product is a product: its shape is in the alpha channel."""
    image = Image.new("RGBA", (200, 200), (200, 30, 30, 0))
    ImageDraw.Draw(image).rectangle((50, 50, 150, 150), fill=(200, 30, 30, 255))
    assert _verdict(image).visible


def test_a_close_up_with_texture_is_visible() -> None:
    rng = np.random.default_rng(3)
    texture = Image.fromarray(rng.integers(60, 200, (128, 128, 3), dtype=np.uint8))
    verdict = _verdict(texture)
    assert verdict.visible and verdict.coverage == pytest.approx(1.0, abs=0.01)


def test_a_fully_transparent_png_is_refused_whatever_colours_hide_under_it() -> None:
    rng = np.random.default_rng(1)
    pixels = np.dstack([rng.integers(0, 255, (96, 96, 3), dtype=np.uint8), np.zeros((96, 96), np.uint8)])
    verdict = _verdict(Image.fromarray(pixels, "RGBA"))
    assert (verdict.visible, verdict.why, verdict.coverage) == (False, TRANSPARENT, 0.0)
    assert verdict.reason == "product_not_visible"
    assert "coverage 0.0000" in verdict.detail


@pytest.mark.parametrize(
    "image",
    [
        Image.new("RGB", (300, 200), (255, 255, 255)),
        _jpeg(Image.new("RGB", (300, 200), (40, 120, 200))),
        Image.new("RGBA", (64, 64), (10, 10, 10, 255)),
        Image.new("L", (50, 50), 128),
        Image.new("RGB", (1, 1), (200, 0, 0)),
    ],
    ids=["white", "jpeg-blue", "opaque-rgba", "grey", "one-pixel"],
)
def test_a_one_colour_image_is_refused_as_uniform(image: Image.Image) -> None:
    verdict = _verdict(image)
    assert (verdict.visible, verdict.why, verdict.coverage) == (False, UNIFORM, 0.0)


def test_a_palette_image_of_one_colour_under_two_indices_is_uniform() -> None:
    image = Image.new("P", (40, 40), 0)
    image.putpalette([9, 9, 9, 9, 9, 9])
    ImageDraw.Draw(image).rectangle((5, 5, 20, 20), fill=1)
    assert _verdict(image).why == UNIFORM


def test_a_blank_frame_with_a_speck_has_no_content() -> None:
    image = Image.new("RGB", (800, 800), (255, 255, 255))
    ImageDraw.Draw(image).rectangle((400, 400, 402, 402), fill=(0, 0, 0))
    verdict = _verdict(image)
    assert (verdict.visible, verdict.why) == (False, NO_CONTENT)
    assert verdict.coverage < 0.001 and "separates nothing" in verdict.detail


def test_an_empty_mask_is_refused() -> None:
    verdict = _verdict(_jpeg(_packshot()), Image.new("L", (256, 256), 0))
    assert (verdict.visible, verdict.why, verdict.coverage) == (False, EMPTY_MASK, 0.0)


def test_a_mask_below_the_minimum_coverage_is_refused_with_its_coverage() -> None:
    image = Image.new("RGBA", (512, 512), (0, 0, 0, 0))
    ImageDraw.Draw(image).rectangle((250, 250, 265, 265), fill=(200, 60, 60, 255))  # 16x16 px
    verdict = _verdict(image)
    assert (verdict.visible, verdict.why) == (False, LOW_COVERAGE)
    assert verdict.coverage == pytest.approx(256 / 512**2, rel=0.1)
    assert f"{verdict.coverage:.4f}" in verdict.detail
    assert judge(measure_product(image, compute_mask(image)), 0.0005).visible


def test_a_mask_over_transparent_pixels_does_not_count() -> None:
    """A full mask (what segmenting the hidden colours may give) over an image that shows only a
    speck: the speck is all the product there is."""
    image = Image.new("RGBA", (400, 400), (120, 30, 30, 0))
    ImageDraw.Draw(image).rectangle((10, 10, 13, 13), fill=(120, 30, 30, 255))
    verdict = _verdict(image, Image.new("L", image.size, 255))
    assert not verdict.visible and verdict.coverage < 0.001


def test_measures_survive_the_mask_metadata_round_trip() -> None:
    measures = ProductMeasures(coverage=0.123456, transparent=False, uniform=True, content=0.5)
    meta = {f"x-amz-meta-{k}": v for k, v in measures.to_metadata().items()}
    assert ProductMeasures.from_metadata(meta) == measures
    assert ProductMeasures.from_metadata({"x-amz-meta-product-coverage": "0.5"}) is None
    assert ProductMeasures.from_metadata({}) is None


def test_a_camera_sized_reference_is_measured_without_full_size_copies() -> None:
    image = Image.new("RGB", (6000, 4000), (250, 250, 250))
    ImageDraw.Draw(image).rectangle((2000, 1000, 4000, 3000), fill=(20, 80, 160))
    mask = Image.new("L", image.size, 0)
    ImageDraw.Draw(mask).rectangle((2000, 1000, 4000, 3000), fill=255)
    verdict = judge(measure_product(image, mask), MIN_COVERAGE)
    assert verdict.visible and verdict.coverage == pytest.approx(2001 * 2001 / 24e6, rel=0.01)


# --- the quality gate: an empty product region scores 0, never 1 ------------------------------


def test_a_transparent_product_under_a_full_mask_scores_zero_not_one() -> None:
    """The mask the classical segmentation gives a transparent reference is the whole frame (it
    segments the hidden colours); the compositor then pastes those hidden colours. Scored over
    that "region" the output would match itself perfectly."""
    product = Image.new("RGBA", (96, 96), (255, 255, 255, 0))
    full = Image.new("L", product.size, 255)
    output = Image.new("RGB", (192, 192), (255, 255, 255))
    assert product_preservation(output, product, full) == 0.0
    assert product_preservation(output, product, None) == 0.0
    assert preservation_scores(output, product, full) == {"preservation": 0.0, "product_region": 0.0}


def test_a_uniform_full_frame_product_scores_zero_not_one() -> None:
    product = Image.new("RGB", (80, 80), (200, 30, 30))
    output = composite(product.convert("RGBA"), None, 192, 192, "studio", seed=1)
    region = product_region(product, Image.new("L", product.size, 255))
    assert region.empty and region.coverage == 0.0
    assert preservation_scores(output, product, Image.new("L", product.size, 255))["preservation"] == 0.0


def test_an_empty_or_speck_mask_is_an_empty_region() -> None:
    product = _cutout()
    assert product_region(product, Image.new("L", product.size, 0)).empty
    speck = Image.new("L", product.size, 0)
    ImageDraw.Draw(speck).rectangle((100, 100, 102, 102), fill=255)  # 9 px: below a template
    assert product_region(product, speck).empty


def test_a_real_product_region_is_scored() -> None:
    product = _cutout()
    output = composite(product, None, 256, 256, "kitchen", seed=3)
    scores = preservation_scores(output, product, product.getchannel("A"))
    assert scores["preservation"] > 0.8
    assert scores["product_region"] == pytest.approx(product_region(product, None).coverage)
    assert 0.3 < scores["product_region"] < 0.7
    assert failed_reasons(scores) == []


def test_an_empty_region_fails_as_product_missing_not_as_low_preservation() -> None:
    assert failed_reasons({"preservation": 0.0, "product_region": 0.0}) == [REASON_PRODUCT_MISSING]
    assert failed_reasons({"preservation": 0.0, "product_region": float("nan")}) == [REASON_PRODUCT_MISSING]
    assert failed_reasons({"preservation": 0.1, "product_region": 0.4}) == [REASON_PRODUCT_NOT_PRESERVED]
    product = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    scores = preservation_scores(Image.new("RGB", (128, 128)), product, Image.new("L", (64, 64), 255))
    assert failed_reasons(scores, required=["preservation"]) == [REASON_PRODUCT_MISSING]
