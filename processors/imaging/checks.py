"""Output checks for the quality stage: decode, dimensions, blank output, and the verdict.

Every check returns plain floats so the quality stage can record all of them; ``failed_reasons``
is the one verdict: it turns the recorded scores and the configured thresholds into
machine-readable reason codes that end up on the job and in ClickHouse. Product preservation is
scored in processors.imaging.preservation; its names stay importable from here.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from processors.imaging.framing import to_rgb
from processors.imaging.limits import DimensionError, check_dimensions
from processors.imaging.preservation import (
    PreservationMatch,
    ProductRegion,
    find_product,
    product_preservation,
    product_region,
)

if TYPE_CHECKING:
    from processors.config import QualitySettings

__all__ = [
    "REASON_BLANK",
    "REASON_CORRUPT",
    "REASON_LOW_PROMPT_ADHERENCE",
    "REASON_OCR_UNAVAILABLE",
    "REASON_OVERSIZED",
    "REASON_PRESERVATION_UNSCORED",
    "REASON_PRODUCT_MISSING",
    "REASON_PRODUCT_NOT_PRESERVED",
    "REASON_TEXT_MISMATCH",
    "REASON_WRONG_SIZE",
    "UNSCORED_REASONS",
    "ImageCheckError",
    "PreservationMatch",
    "ProductRegion",
    "QualityThresholds",
    "check_output",
    "decode_image",
    "failed_reasons",
    "find_product",
    "preservation_scores",
    "product_preservation",
    "product_region",
]

REASON_CORRUPT = "corrupt_output"
REASON_OVERSIZED = "oversized_output"
REASON_WRONG_SIZE = "wrong_size"
REASON_BLANK = "blank_output"
REASON_PRODUCT_NOT_PRESERVED = "product_not_preserved"
# The stored product reference has no product region to look for: preservation cannot be high.
REASON_PRODUCT_MISSING = "product_missing"
REASON_LOW_PROMPT_ADHERENCE = "low_prompt_adherence"
REASON_TEXT_MISMATCH = "text_mismatch"
REASON_PRESERVATION_UNSCORED = "preservation_unscored"
REASON_OCR_UNAVAILABLE = "ocr_unavailable"
# A required score that was not measured: the check could not run, which is never a pass.
UNSCORED_REASONS: dict[str, str] = {
    "preservation": REASON_PRESERVATION_UNSCORED,
    "ocr_score": REASON_OCR_UNAVAILABLE,
}


@dataclass(frozen=True)
class QualityThresholds:
    """The limits ``failed_reasons`` applies; their one source is configuration (QualitySettings)."""

    max_blank_score: float
    min_preservation: float
    # CLIP and OCR scales depend on the model; they are applied when the score was measured.
    min_clip_score: float | None = None
    min_ocr_score: float | None = None
    # The product region score (preservation_scores' "product_region") below which the product
    # is missing from the reference itself.
    min_product_region: float = 0.005

    @classmethod
    def from_settings(cls, settings: QualitySettings) -> QualityThresholds:
        return cls(
            max_blank_score=settings.max_blank_score,
            min_preservation=settings.min_preservation,
            min_clip_score=settings.min_clip_score,
            min_ocr_score=settings.min_ocr_score,
            min_product_region=settings.min_product_coverage,
        )

    @classmethod
    def defaults(cls) -> QualityThresholds:
        """The configuration's defaults, for callers that have no settings of their own."""
        from processors.config import QualitySettings

        return cls.from_settings(QualitySettings())


# Scores measured on a copy at most this large: enough to tell flat from detailed, and cheap.
_STATS_SIZE = 256
# Channel std and mean gradient at which an image counts as fully "not blank".
_STD_REF = 24.0
_EDGE_REF = 4.0


class ImageCheckError(Exception):
    """An output that cannot be checked at all; ``reason_code`` is one of the REASON_* codes."""

    def __init__(self, reason_code: str, detail: str) -> None:
        super().__init__(f"{reason_code}: {detail}")
        self.reason_code = reason_code
        self.detail = detail

    @property
    def reason(self) -> str:
        """Alias of ``reason_code`` (the name the quality stage reads)."""
        return self.reason_code


# --- decode ----------------------------------------------------------------------------------


def decode_image(data: bytes, max_pixels: int) -> Image.Image:
    """Fully decode ``data``; raise ImageCheckError for empty, corrupt, truncated or oversized."""
    if not data:
        raise ImageCheckError(REASON_CORRUPT, "empty payload")
    try:
        with warnings.catch_warnings():
            # We enforce our own pixel limit below; Pillow's global warning would only be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            _verify(data, max_pixels)
            image = Image.open(io.BytesIO(data))
            image.load()
    except ImageCheckError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageCheckError(REASON_OVERSIZED, str(exc)) from exc
    except Exception as exc:
        # Decoders of untrusted bytes raise a wide variety of types (OSError, SyntaxError,
        # struct.error, IndexError...): any of them means the output is unusable.
        raise ImageCheckError(REASON_CORRUPT, _decode_detail(exc)) from exc
    return image


def _verify(data: bytes, max_pixels: int) -> None:
    """Header-level checks before any pixel is decoded (verify() also checks PNG CRCs)."""
    with Image.open(io.BytesIO(data)) as probe:
        try:
            check_dimensions(probe.size, max_pixels)
        except DimensionError as exc:
            raise ImageCheckError(REASON_OVERSIZED if exc.oversized else REASON_CORRUPT, str(exc)) from exc
        probe.verify()


def _decode_detail(exc: Exception) -> str:
    message = str(exc) or type(exc).__name__
    if "truncated" in message.lower():
        return f"truncated: {message}"
    return f"{type(exc).__name__}: {message}"


# --- basic output scores ---------------------------------------------------------------------


def check_output(image: Image.Image, expected_width: int, expected_height: int) -> dict[str, float]:
    """Scores: width, height, size_ok (0/1), blank_score (1 = flat), std, mean, edge."""
    width, height = image.size
    pixels = _stats_pixels(image)
    luminance = pixels @ np.array([0.299, 0.587, 0.114])
    # Per-channel std catches colour-only structure that a luminance std would miss.
    std = float(pixels.reshape(-1, 3).std(axis=0).max()) if pixels.size else 0.0
    edge = _edge_energy(luminance)
    blank = 1.0 - min(1.0, max(std / _STD_REF, edge / _EDGE_REF))
    return {
        "width": float(width),
        "height": float(height),
        "size_ok": 1.0 if (width, height) == (expected_width, expected_height) else 0.0,
        "blank_score": float(blank),
        "std": std,
        "mean": float(luminance.mean()) if luminance.size else 0.0,
        "edge": edge,
    }


def _stats_pixels(image: Image.Image) -> np.ndarray:
    rgb = to_rgb(image)
    if max(rgb.size) > _STATS_SIZE:
        scale = _STATS_SIZE / max(rgb.size)
        size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
        rgb = rgb.resize(size, Image.Resampling.BOX)
    return np.asarray(rgb, dtype=np.float64)


def _edge_energy(luminance: np.ndarray) -> float:
    if luminance.shape[0] < 2 or luminance.shape[1] < 2:
        return 0.0
    dx = np.abs(np.diff(luminance, axis=1)).mean()
    dy = np.abs(np.diff(luminance, axis=0)).mean()
    return float(dx + dy)


def preservation_scores(
    output: Image.Image,
    product: Image.Image,
    mask: Image.Image | None,
    region: ProductRegion | None = None,
) -> dict[str, float]:
    """The scores product preservation records: ``preservation`` (scored only over a non-empty
    product region; 0 when it is empty, never 1) and ``product_region``, the region's coverage
    of the reference's frame (0 when empty), which failed_reasons turns into product_missing.
    ``region``: product_region(product, mask), when the caller keeps it for many outputs."""
    region = region or product_region(product, mask)
    if region.empty:
        return {"preservation": 0.0, "product_region": 0.0}
    match = find_product(output, product, mask, region)
    return {"preservation": match.score, "product_region": region.coverage}


def failed_reasons(
    scores: Mapping[str, float],
    thresholds: QualityThresholds | None = None,
    *,
    required: Collection[str] = (),
) -> list[str]:
    """The verdict: reason codes for every failed check, in a fixed order (empty: passed).

    Score keys are the ones the quality stage records: size_ok, blank_score, product_region,
    preservation, clip_score, ocr_score. A check applies when its score was recorded; a
    ``required`` score that is missing fails with its "unscored" reason (preservation_unscored,
    ocr_unavailable), and a NaN score fails its check: an unmeasured result never passes
    silently. A product region below its limit is product_missing, and then preservation is not
    judged on its own (it measured nothing). Decoding is not judged here: decode_image raises
    with its own reason code.
    """
    limits = thresholds or QualityThresholds.defaults()
    checks = (
        ("size_ok", 1.0, _below, REASON_WRONG_SIZE),
        ("blank_score", limits.max_blank_score, _at_least, REASON_BLANK),
        ("product_region", limits.min_product_region, _below, REASON_PRODUCT_MISSING),
        ("preservation", limits.min_preservation, _below, REASON_PRODUCT_NOT_PRESERVED),
        ("clip_score", limits.min_clip_score, _below, REASON_LOW_PROMPT_ADHERENCE),
        ("ocr_score", limits.min_ocr_score, _below, REASON_TEXT_MISMATCH),
    )
    reasons: list[str] = []
    for key, limit, fails, reason in checks:
        if key == "preservation" and REASON_PRODUCT_MISSING in reasons:
            continue
        if key not in scores:
            if key in required:
                reasons.append(UNSCORED_REASONS.get(key, f"{key}_unscored"))
        elif limit is not None and fails(scores[key], limit):
            reasons.append(reason)
    return reasons


def _below(score: float, limit: float) -> bool:
    return not score >= limit  # NaN fails


def _at_least(score: float, limit: float) -> bool:
    return not score < limit  # NaN fails
