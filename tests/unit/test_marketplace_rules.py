"""Marketplace rules on encoded derivatives: each rule's verdict on an image that breaks it, and a
broken rule holding the job for review with the rule named."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from processors.channels.presets import Preset, load_presets
from processors.channels.render import (
    REASON_PREFIX,
    ChannelDerivative,
    check_summary,
    hold_for_review,
    render_channel,
)
from processors.channels.rules import RuleCheck, check
from processors.imaging.derivatives import DerivativeSpec, Metadata, encode, frame
from processors.provenance.xmp import read_xmp

MAIN = load_presets().for_channel("marketplace")
FEED = load_presets().for_channel("shopping")


def _jpeg(image: Image.Image, quality: int = 92) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def _product_on(background: tuple[int, int, int], size: int, product: tuple[int, int, int, int]):
    """A square image with an ellipse "product" in ``product``, and its mask."""
    image = Image.new("RGB", (size, size), background)
    mask = Image.new("L", (size, size), 0)
    ImageDraw.Draw(image).ellipse(product, fill=(30, 60, 160))
    ImageDraw.Draw(mask).ellipse(product, fill=255)
    return image, mask


def _verdicts(data: bytes, mask: Image.Image | None, checks: tuple[RuleCheck, ...]) -> dict[str, bool]:
    return {v.name: v.passed for v in check(data, mask, checks)}


MAIN_CHECKS = MAIN[0].checks
FEED_CHECKS = FEED[0].checks


def test_a_compliant_main_image_passes_every_rule() -> None:
    image, mask = _product_on((255, 255, 255), 1000, (50, 50, 950, 950))
    assert _verdicts(_jpeg(image), mask, MAIN_CHECKS) == {
        "marketplace_main.background_white": True,
        "marketplace_main.min_product_fill": True,
        "marketplace_main.min_longest_side": True,
    }


@pytest.mark.parametrize("background", [(240, 240, 240), (254, 255, 255), (255, 250, 240)])
def test_a_background_that_is_not_pure_white_breaks_background_white(
    background: tuple[int, int, int],
) -> None:
    image, mask = _product_on(background, 1000, (50, 50, 950, 950))
    verdicts = check(_jpeg(image, 95), mask, MAIN_CHECKS)
    by_name = {v.name: v for v in verdicts}
    white = by_name["marketplace_main.background_white"]
    assert not white.passed and "not RGB 255" in white.measured
    assert by_name["marketplace_main.min_product_fill"].passed  # only the broken rule fails


def test_a_shadow_on_white_breaks_background_white() -> None:
    image, mask = _product_on((255, 255, 255), 1000, (100, 100, 900, 900))
    ImageDraw.Draw(image).ellipse((150, 905, 850, 960), fill=(225, 225, 225))  # a drop shadow
    assert not _verdicts(_jpeg(image), mask, MAIN_CHECKS)["marketplace_main.background_white"]


def test_jpeg_ringing_next_to_the_product_is_not_counted_as_background() -> None:
    # A hard-edged dark product on white: q80 JPEG rings around it within the margin.
    image, mask = _product_on((255, 255, 255), 1000, (60, 60, 940, 940))
    assert _verdicts(_jpeg(image, 80), mask, MAIN_CHECKS)["marketplace_main.background_white"]


def test_a_small_product_breaks_min_product_fill_with_its_measure() -> None:
    image, mask = _product_on((255, 255, 255), 1000, (200, 200, 800, 800))  # 60% of the frame
    verdicts = {v.name: v for v in check(_jpeg(image), mask, MAIN_CHECKS)}
    fill = verdicts["marketplace_main.min_product_fill"]
    assert not fill.passed and fill.measured == "60.1%"
    assert verdicts["marketplace_main.background_white"].passed


def test_fill_is_measured_on_the_products_longest_span() -> None:
    # A tall, thin product: 90% of the height, 20% of the width, fills the frame enough.
    image, mask = _product_on((255, 255, 255), 1000, (400, 50, 600, 950))
    assert _verdicts(_jpeg(image), mask, MAIN_CHECKS)["marketplace_main.min_product_fill"]


def test_an_image_under_1000_px_breaks_min_longest_side() -> None:
    image, mask = _product_on((255, 255, 255), 800, (40, 40, 760, 760))
    verdicts = {v.name: v for v in check(_jpeg(image), mask, MAIN_CHECKS)}
    side = verdicts["marketplace_main.min_longest_side"]
    assert not side.passed and side.measured == "800 px"
    assert verdicts["marketplace_main.min_product_fill"].passed


@pytest.mark.parametrize(("size", "passed"), [((500, 500), True), ((499, 800), False), ((800, 400), False)])
def test_shopping_feeds_need_500_by_500(size: tuple[int, int], passed: bool) -> None:
    data = _jpeg(Image.new("RGB", size, (255, 255, 255)))
    assert _verdicts(data, Image.new("L", size, 0), FEED_CHECKS) == {"shopping_feed.min_size": passed}


def test_without_a_mask_the_product_is_found_in_the_file_itself() -> None:
    small, _ = _product_on((255, 255, 255), 1000, (250, 250, 750, 750))
    big, _ = _product_on((255, 255, 255), 1000, (40, 40, 960, 960))
    assert not _verdicts(_jpeg(small), None, MAIN_CHECKS)["marketplace_main.min_product_fill"]
    assert _verdicts(_jpeg(big), None, MAIN_CHECKS)["marketplace_main.min_product_fill"]


def test_the_marketplace_preset_makes_a_compliant_main_image_from_a_scene() -> None:
    # The product sits small on a coloured scene: the preset cuts it out onto pure white at 90%.
    image, mask = _product_on((120, 160, 90), 1024, (380, 380, 640, 700))
    (made,) = render_channel(image, MAIN, Metadata({}), mask)
    assert made.verdicts and not made.broken, [v.describe() for v in made.verdicts]


def test_a_broken_rule_holds_the_job_for_review_with_the_rule_named() -> None:
    image, mask = _product_on((255, 255, 255), 800, (40, 40, 760, 760))
    spec = DerivativeSpec("marketplace-800", 800, 800, "contain", "JPEG", 92)
    rendered = [ChannelDerivative(spec, _jpeg(image), check(_jpeg(image), mask, MAIN_CHECKS))]
    job = {"quality": {"passed": True, "scores": {"preservation": 0.9}, "reasons": [], "chosen_index": 0}}
    reasons = hold_for_review(job, rendered)
    assert reasons == [
        f"{REASON_PREFIX}:marketplace-800:marketplace_main.min_longest_side"
        " (measured 800 px; required >= 1000 px)"
    ]
    assert job["quality"]["passed"] is False and job["quality"]["reasons"] == reasons
    assert job["quality"]["scores"] == {"preservation": 0.9}  # the scores stay as quality made them
    summary = check_summary(rendered)
    assert summary["checks.marketplace-800"] == "2 passed, 1 failed"
    assert "min_longest_side" in summary["broken_rules"]


def test_a_job_whose_derivatives_pass_is_left_as_it_was() -> None:
    image, mask = _product_on((255, 255, 255), 1000, (50, 50, 950, 950))
    spec = DerivativeSpec("m", 1000, 1000, "contain", "JPEG")
    rendered = [ChannelDerivative(spec, _jpeg(image), check(_jpeg(image), mask, MAIN_CHECKS))]
    job = {"quality": {"passed": True, "scores": {}, "reasons": [], "chosen_index": 0}}
    assert hold_for_review(job, rendered) == []
    assert job["quality"]["passed"] is True


def test_a_rerun_does_not_pile_up_channel_reasons_but_keeps_the_quality_gates() -> None:
    image, mask = _product_on((255, 255, 255), 800, (40, 40, 760, 760))
    spec = DerivativeSpec("m", 800, 800, "contain", "JPEG")
    rendered = [ChannelDerivative(spec, _jpeg(image), check(_jpeg(image), mask, MAIN_CHECKS))]
    job = {"quality": {"passed": False, "scores": {}, "reasons": ["preservation_below_threshold"]}}
    hold_for_review(job, rendered)
    hold_for_review(job, rendered)  # a redelivered message is rendered again
    reasons = job["quality"]["reasons"]
    assert reasons[0] == "preservation_below_threshold"
    assert len(reasons) == 2


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_the_file_with_verdicts_has_the_pixels_that_were_checked(fmt: str) -> None:
    image, mask = _product_on((250, 250, 250), 1024, (30, 30, 994, 994))
    spec = DerivativeSpec("m", 1000, 1000, "contain", fmt, 92, background="white")  # type: ignore[arg-type]
    (made,) = render_channel(image, (Preset(spec, MAIN_CHECKS),), Metadata({}), mask)
    pixels, _ = frame(image, spec, mask)
    checked = encode(pixels, spec, Metadata({}))  # what the rules saw, before the verdicts went in
    assert made.data != checked  # the verdicts are in the final file's XMP...
    assert read_xmp(made.data).channel_checks_json
    decoded = [np.asarray(Image.open(io.BytesIO(d)).convert("RGB")) for d in (made.data, checked)]
    assert np.array_equal(decoded[0], decoded[1])  # ...and its pixels are the checked ones
    assert [v.name for v in made.broken] == ["marketplace_main.background_white"]
