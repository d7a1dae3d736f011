from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from gpu_workers.backends.compositor import composite
from processors.config import QualitySettings
from processors.imaging.checks import (
    REASON_BLANK,
    REASON_CORRUPT,
    REASON_OCR_UNAVAILABLE,
    REASON_OVERSIZED,
    REASON_PRESERVATION_UNSCORED,
    REASON_PRODUCT_NOT_PRESERVED,
    REASON_WRONG_SIZE,
    ImageCheckError,
    QualityThresholds,
    check_output,
    decode_image,
    failed_reasons,
    find_product,
    product_preservation,
)


def _encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def _product(body: tuple[int, int, int] = (200, 50, 40)) -> Image.Image:
    """A small mug-ish cut-out with some internal structure."""
    image = Image.new("RGBA", (96, 96), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.ellipse((62, 30, 90, 66), outline=(*body, 255), width=6)
    draw.rounded_rectangle((14, 14, 72, 88), radius=8, fill=(*body, 255))
    draw.rectangle((14, 44, 72, 52), fill=(240, 236, 220, 255))
    draw.ellipse((34, 60, 52, 78), fill=(20, 30, 60, 255))
    return image


def _noise(size: tuple[int, int]) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


# --- decode ----------------------------------------------------------------------------------


def test_decode_accepts_a_valid_image() -> None:
    image = decode_image(_encode(_noise((32, 24)), "PNG"), max_pixels=10_000)
    assert image.size == (32, 24)


def test_truncated_jpeg_is_corrupt() -> None:
    data = _encode(_noise((64, 64)), "JPEG")
    with pytest.raises(ImageCheckError) as caught:
        decode_image(data[: len(data) // 2], max_pixels=10_000)
    assert caught.value.reason_code == caught.value.reason == REASON_CORRUPT
    assert "truncated" in caught.value.detail


def test_truncated_png_is_corrupt() -> None:
    data = _encode(_noise((64, 64)), "PNG")
    with pytest.raises(ImageCheckError) as caught:
        decode_image(data[: len(data) - 40], max_pixels=10_000)
    assert caught.value.reason_code == REASON_CORRUPT


@pytest.mark.parametrize("data", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\0" * 20])
def test_garbage_is_corrupt(data: bytes) -> None:
    with pytest.raises(ImageCheckError) as caught:
        decode_image(data, max_pixels=10_000)
    assert caught.value.reason_code == REASON_CORRUPT


def test_oversized_is_rejected_before_decoding() -> None:
    with pytest.raises(ImageCheckError) as caught:
        decode_image(_encode(Image.new("RGB", (200, 100)), "PNG"), max_pixels=19_999)
    assert caught.value.reason_code == REASON_OVERSIZED


# --- output scores ---------------------------------------------------------------------------


def test_flat_output_is_blank() -> None:
    scores = check_output(Image.new("RGB", (64, 64), (250, 250, 250)), 64, 64)
    assert scores["blank_score"] == pytest.approx(1.0)
    assert scores["std"] == 0.0 and scores["mean"] == pytest.approx(250, abs=0.5)
    assert failed_reasons(scores) == [REASON_BLANK]


def test_nearly_flat_jpeg_is_still_blank() -> None:
    noisy = np.full((64, 64, 3), 30, dtype=np.int16) + np.random.default_rng(1).integers(-1, 2, (64, 64, 3))
    decoded = decode_image(_encode(Image.fromarray(noisy.astype(np.uint8)), "JPEG"), 10_000)
    assert REASON_BLANK in failed_reasons(check_output(decoded, 64, 64))


def test_real_composite_passes_basic_checks() -> None:
    output = composite(_product(), None, 128, 128, "studio", seed=1)
    scores = check_output(output, 128, 128)
    assert scores["size_ok"] == 1.0 and scores["width"] == 128.0
    assert scores["blank_score"] < 0.5
    assert failed_reasons(scores) == []


def test_wrong_size_is_reported() -> None:
    scores = check_output(_noise((64, 48)), 64, 64)
    assert scores["size_ok"] == 0.0 and scores["height"] == 48.0
    assert failed_reasons(scores) == [REASON_WRONG_SIZE]


def _limits(**overrides: float) -> QualityThresholds:
    return dataclasses.replace(QualityThresholds.defaults(), **overrides)


def test_default_thresholds_are_the_configured_defaults() -> None:
    settings = QualitySettings()
    assert QualityThresholds.defaults() == QualityThresholds(
        max_blank_score=settings.max_blank_score,
        min_preservation=settings.min_preservation,
        min_clip_score=settings.min_clip_score,
        min_ocr_score=settings.min_ocr_score,
        min_product_region=settings.min_product_coverage,
    )
    tight = QualityThresholds.from_settings(QualitySettings(min_product_coverage=0.2))
    assert failed_reasons({"product_region": 0.1}, tight) == ["product_missing"]
    assert failed_reasons({"product_region": 0.1}) == []


def test_failed_reasons_apply_only_present_scores_and_the_given_thresholds() -> None:
    assert failed_reasons({}) == []
    assert failed_reasons({"preservation": 0.3}) == [REASON_PRODUCT_NOT_PRESERVED]
    assert failed_reasons({"preservation": 0.3}, _limits(min_preservation=0.2)) == []
    assert failed_reasons({"clip_score": 0.1}, _limits(min_clip_score=None)) == []
    assert failed_reasons({"clip_score": 0.1}, _limits(min_clip_score=0.2)) == ["low_prompt_adherence"]
    assert failed_reasons({"ocr_score": 0.5}, _limits(min_ocr_score=0.9)) == ["text_mismatch"]


def test_failed_reasons_keep_one_order() -> None:
    scores = {"size_ok": 0.0, "blank_score": 1.0, "preservation": 0.0, "clip_score": -1.0, "ocr_score": 0.0}
    assert failed_reasons(scores) == [
        REASON_WRONG_SIZE,
        REASON_BLANK,
        REASON_PRODUCT_NOT_PRESERVED,
        "low_prompt_adherence",
        "text_mismatch",
    ]


@pytest.mark.parametrize("key", ["size_ok", "blank_score", "preservation", "clip_score", "ocr_score"])
def test_a_nan_score_fails_its_check(key: str) -> None:
    assert len(failed_reasons({key: float("nan")})) == 1


def test_limits_are_inclusive_on_the_failing_side() -> None:
    limits = _limits(max_blank_score=0.9, min_preservation=0.6)
    assert failed_reasons({"blank_score": 0.9}, limits) == [REASON_BLANK]
    assert failed_reasons({"blank_score": 0.8999}, limits) == []
    assert failed_reasons({"preservation": 0.6}, limits) == []
    assert failed_reasons({"preservation": 0.5999}, limits) == [REASON_PRODUCT_NOT_PRESERVED]


def test_a_missing_required_score_is_unscored_in_its_place() -> None:
    assert failed_reasons({"size_ok": 0.0}, required=["preservation", "ocr_score"]) == [
        REASON_WRONG_SIZE,
        REASON_PRESERVATION_UNSCORED,
        REASON_OCR_UNAVAILABLE,
    ]
    assert failed_reasons({"preservation": 0.9}, required=["preservation"]) == []


# --- product preservation --------------------------------------------------------------------


@pytest.mark.parametrize("scene", ["studio", "kitchen", "outdoor", "holiday"])
def test_preservation_is_high_for_a_composite_of_the_product(scene: str) -> None:
    product = _product()
    output = composite(product, None, 192, 160, scene, seed=9)
    assert product_preservation(output, product, product.getchannel("A")) > 0.8


def test_preservation_survives_jpeg_reencoding() -> None:
    product = _product()
    output = composite(product, None, 192, 192, "kitchen", seed=2)
    reencoded = Image.open(io.BytesIO(_encode(output, "JPEG")))
    assert product_preservation(reencoded, product, None) > 0.8


def test_preservation_is_low_without_the_product() -> None:
    product = _product()
    mask = product.getchannel("A")
    other = Image.new("RGBA", (96, 96), (0, 0, 0, 0))
    ImageDraw.Draw(other).ellipse((10, 20, 86, 80), fill=(40, 120, 60, 255))
    assert product_preservation(composite(other, None, 192, 192, "studio", 3), product, mask) < 0.5
    assert product_preservation(Image.new("RGB", (192, 192), (240, 240, 240)), product, mask) < 0.5
    assert product_preservation(_noise((192, 192)), product, mask) < 0.5


def test_preservation_is_low_for_a_recoloured_product() -> None:
    product = _product()
    recoloured = _product(body=(40, 80, 210))
    output = composite(recoloured, None, 192, 192, "studio", seed=4)
    assert product_preservation(output, product, product.getchannel("A")) < 0.5


def test_find_product_locates_the_placement() -> None:
    product = _product()
    output = composite(product, None, 200, 200, "studio", seed=0)
    match = find_product(output, product, None)
    # The compositor fills 70% of the canvas and centres the product horizontally.
    assert match.fit == pytest.approx(0.7, abs=0.03)
    assert match.x + match.width / 2 == pytest.approx(100, abs=4)


def test_preservation_of_an_empty_mask_is_zero() -> None:
    product = _product()
    empty = Image.new("L", product.size, 0)
    assert product_preservation(composite(product, None, 64, 64, "studio", 0), product, empty) == 0
