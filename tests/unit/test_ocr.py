"""OCR text check: normalisation and windowed fuzzy matching, and real tesseract on rendered text."""

from __future__ import annotations

import functools

import pytest
from PIL import Image, ImageDraw, ImageFont

from processors.imaging.ocr import (
    OcrUnavailable,
    normalise_text,
    ocr_text,
    tesseract_available,
    text_match_score,
    text_similarity,
)


def needs_tesseract(test):  # type: ignore[no-untyped-def]
    """scripts/bootstrap.sh installs tesseract-ocr: a test that needs it fails without it."""

    @functools.wraps(test)  # keeps the signature, so pytest still injects fixtures
    def run(*args, **kwargs):  # type: ignore[no-untyped-def]
        assert tesseract_available(), "tesseract binary not installed: run scripts/bootstrap.sh"
        return test(*args, **kwargs)

    return run


def _render(*lines: str, size: tuple[int, int] = (640, 96)) -> Image.Image:
    image = Image.new("RGB", (size[0], size[1] * len(lines)), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=48)
    for i, line in enumerate(lines):
        draw.text((16, 16 + i * size[1]), line, fill="black", font=font)
    return image


def test_normalise_text() -> None:
    assert normalise_text("  SUMMER\tSale — 50% off!!\n") == "summer sale 50 off"
    assert normalise_text("Ｃａｆé_Crème") == "café crème"
    assert normalise_text("...") == ""


def test_similarity_uses_the_best_window() -> None:
    observed = "NEW ARRIVALS\nSummer Sale 50% off\nfree shipping"
    assert text_similarity("summer sale", observed) == 1.0
    assert text_similarity("Summer Sa1e 50% off", observed) > 0.9  # one OCR-style slip
    assert text_similarity("winter clearance", observed) < 0.5
    assert text_similarity("summer sale", "") == 0.0
    assert text_similarity("!!", "anything") == 1.0


def test_missing_binary_is_ocr_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    import pytesseract  # the ml extra installs it

    monkeypatch.setattr(pytesseract.pytesseract, "tesseract_cmd", "/nonexistent/tesseract")
    assert not tesseract_available()
    with pytest.raises(OcrUnavailable, match="/nonexistent/tesseract"):
        ocr_text(_render("hello"))


@needs_tesseract
def test_reads_rendered_text() -> None:
    image = _render("Summer Sale 50% off")
    assert normalise_text(ocr_text(image)) == "summer sale 50 off"
    assert text_match_score("SUMMER SALE, 50% OFF", image) > 0.8
    assert text_match_score("Fresh roast coffee", image) < 0.5


@needs_tesseract
def test_expected_text_among_other_text() -> None:
    image = _render("NEW ARRIVALS", "Summer Sale")
    assert text_match_score("summer sale", image) > 0.8
    assert text_match_score("winter clearance", image) < 0.5


@needs_tesseract
def test_image_without_text_scores_zero() -> None:
    assert text_match_score("Summer Sale", Image.new("RGB", (64, 48), "white")) == 0.0
    assert text_match_score("   ", Image.new("RGB", (64, 48), "white")) == 1.0
