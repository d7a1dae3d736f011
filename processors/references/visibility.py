"""Is there a product in a product reference? The one failure Lightbox exists to prevent is a
published image whose product silently is not there, and it starts with a reference that shows
none: a fully transparent cut-out, a one-colour placeholder, a blank frame, or a mask that
finds nothing (or only a speck).

Measuring and judging are split: ``measure_product`` reads the image and its mask once (the
references stage stores the measures as metadata of the mask, so a product image cited by many
jobs is measured once), ``judge`` applies the configured limits to the measures every time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageChops

from processors.imaging.framing import BACKGROUND_MAX, to_rgb
from processors.imaging.masks import alpha_channel, mask_coverage
from processors.imaging.segmenter import MAX_MODEL_COVERAGE

REASON_PRODUCT_NOT_VISIBLE = "product_not_visible"

# Why a product is not visible (the event's ``why`` attribute).
TRANSPARENT = "transparent"
UNIFORM = "uniform"
NO_CONTENT = "no_content"
EMPTY_MASK = "empty_mask"
LOW_COVERAGE = "low_coverage"

# Every band (alpha included) within this many levels across the frame is one colour: JPEG keeps
# a flat colour flat to a level or two.
_UNIFORM_LEVELS = 3
# A mask covering at least this much of the frame separates nothing from anything (the same
# bound the segmenter applies to model masks): then the frame itself must show content.
_FULL_FRAME = MAX_MODEL_COVERAGE
# Content is measured on a copy at most this large: what is smaller than a pixel of it is not
# a product anyone could recognise.
_STATS_SIDE = 512
# A pixel further than this (RGB distance, 0..441) from the frame's median colour is content:
# above JPEG noise and soft shading, below any visible object (the segmentation's own floor is 18).
_CONTENT_DISTANCE = 24.0
_METADATA_PREFIX = "product-"
# Modes Image.reduce() works on directly (and whose pixels are colours, not palette indices).
_REDUCIBLE_MODES = frozenset({"L", "LA", "RGB", "RGBA", "CMYK", "YCbCr"})


@dataclass(frozen=True)
class ProductMeasures:
    coverage: float  # of the frame, by the mask limited to the visible (non-transparent) pixels
    transparent: bool  # no pixel is visible at all
    uniform: bool  # one colour, alpha included, across the frame
    # Fraction of the frame that differs visibly from its median colour: what a full-frame mask
    # (one that separated nothing) has to show instead of a shape.
    content: float

    def to_metadata(self) -> dict[str, str]:
        """Object metadata for the stored mask (S3 user metadata: short ASCII strings)."""
        return {
            f"{_METADATA_PREFIX}coverage": f"{self.coverage:.6f}",
            f"{_METADATA_PREFIX}transparent": str(int(self.transparent)),
            f"{_METADATA_PREFIX}uniform": str(int(self.uniform)),
            f"{_METADATA_PREFIX}content": f"{self.content:.6f}",
        }

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str]) -> ProductMeasures | None:
        """The measures stored with a mask (keys as ObjectStore.metadata returns them), or None
        for a mask stored before they were recorded."""

        def value(name: str) -> str | None:
            for key in (f"x-amz-meta-{_METADATA_PREFIX}{name}", f"{_METADATA_PREFIX}{name}"):
                if key in metadata:
                    return metadata[key]
            return None

        raw = [value(name) for name in ("coverage", "transparent", "uniform", "content")]
        if any(v is None for v in raw):
            return None
        try:
            coverage, transparent, uniform, content = (str(v) for v in raw)
            return cls(float(coverage), transparent == "1", uniform == "1", float(content))
        except ValueError:
            return None


@dataclass(frozen=True)
class Visibility:
    visible: bool
    why: str  # "" when visible, else one of TRANSPARENT, UNIFORM, NO_CONTENT, EMPTY_MASK, LOW_COVERAGE
    coverage: float
    detail: str

    @property
    def reason(self) -> str:
        return "" if self.visible else REASON_PRODUCT_NOT_VISIBLE

    def attributes(self) -> dict[str, str]:
        return {"why": self.why, "coverage": f"{self.coverage:.6f}"}


def product_region(image: Image.Image, mask: Image.Image) -> Image.Image:
    """The mask limited to what the image shows: a transparent pixel is never product, whatever
    a mask computed from the colours hidden under it says."""
    region = mask.convert("L")
    if region.size != image.size:
        region = region.resize(image.size, Image.Resampling.BILINEAR)
    alpha = alpha_channel(image)
    return region if alpha is None else ImageChops.darker(region, alpha)


def measure_product(image: Image.Image, mask: Image.Image) -> ProductMeasures:
    alpha = alpha_channel(image)
    transparent = alpha is not None and alpha.getextrema()[1] <= BACKGROUND_MAX
    return ProductMeasures(
        coverage=mask_coverage(product_region(image, mask)),
        transparent=bool(transparent),
        uniform=_is_uniform(image),
        content=_content_fraction(_stats_copy(image)),
    )


def judge(measures: ProductMeasures, min_coverage: float) -> Visibility:
    """The verdict on measured product references. The coverage it reports is the product's:
    for a one-colour or contentless frame that is what differs from the background (nothing,
    or next to nothing), not the mask that covers the whole frame for want of anything to
    separate."""
    coverage = measures.coverage
    if measures.transparent:
        return _refused(TRANSPARENT, coverage, min_coverage, "every pixel is transparent")
    if measures.uniform:
        return _refused(UNIFORM, 0.0, min_coverage, "the image is one colour")
    if coverage <= 0.0:
        return _refused(EMPTY_MASK, coverage, min_coverage, "the product mask is empty")
    if coverage < min_coverage:
        return _refused(LOW_COVERAGE, coverage, min_coverage, "the product mask is below the minimum")
    if coverage >= _FULL_FRAME and not measures.content >= min_coverage:
        return _refused(
            NO_CONTENT,
            measures.content,
            min_coverage,
            f"the mask separates nothing ({coverage:.4f} of the frame) and no more than the product "
            "coverage differs from the background",
        )
    return Visibility(True, "", coverage, _coverage_text(coverage, min_coverage))


def _coverage_text(coverage: float, min_coverage: float) -> str:
    return f"product coverage {coverage:.4f} of the frame (minimum {min_coverage:g})"


def _refused(why: str, coverage: float, min_coverage: float, what: str) -> Visibility:
    detail = f"product not visible: {what}; {_coverage_text(coverage, min_coverage)}"
    return Visibility(False, why, coverage, detail)


def _is_uniform(image: Image.Image) -> bool:
    # Palette indices say nothing about colours (two indices may hold one colour, and a
    # transparent index hides whatever it holds): judge the colours.
    pixels = image.convert("RGBA") if image.mode in ("P", "PA") else image
    extrema = pixels.getextrema()
    bands = extrema if isinstance(extrema[0], tuple) else (extrema,)
    return all(float(high) - float(low) <= _UNIFORM_LEVELS for low, high in bands)  # type: ignore[misc]


def _stats_copy(image: Image.Image) -> Image.Image:
    """A small RGB copy: reduce() before any mode conversion, so a camera-sized reference is
    never converted at full size."""
    if image.mode not in _REDUCIBLE_MODES:
        image = image.convert("RGBA")  # palette, bilevel, 16-bit: rare, and never camera-sized
    factor = max(1, max(image.size) // _STATS_SIDE)
    return to_rgb(image.reduce(factor) if factor > 1 else image)


def _content_fraction(rgb: Image.Image) -> float:
    pixels = np.asarray(rgb, dtype=np.float32).reshape(-1, 3)
    if pixels.size == 0:
        return 0.0
    background = np.median(pixels, axis=0)
    distance = np.sqrt(((pixels - background) ** 2).sum(axis=1))
    return float(np.mean(distance > _CONTENT_DISTANCE))
