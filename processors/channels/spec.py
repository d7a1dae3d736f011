"""What one derivative is: its size, format, framing and background (a preset's data).

Kept apart from the presets loader and from the renderer (processors.imaging.derivatives), which
both use it, so neither has to import the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Fit = Literal["contain", "cover", "product"]
Format = Literal["JPEG", "PNG", "WEBP"]
# "auto": transparent where the format keeps the image's alpha, else white; "white": always
# white, alpha flattened onto it (what marketplaces ask for).
Background = Literal["auto", "white"]

FITS: tuple[str, ...] = ("contain", "cover", "product")
FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP")
BACKGROUNDS: tuple[str, ...] = ("auto", "white")


@dataclass(frozen=True)
class DerivativeSpec:
    name: str
    width: int
    height: int
    fit: Fit
    format: Format
    quality: int = 90
    # "product" fit: the product's bounding box spans this fraction of the frame (the larger
    # of its width and height fractions).
    fill: float = 0.9
    # "cover" fit: room kept between the product and the frame's edge, as a fraction of the
    # frame's short side, when the product mask is known.
    margin: float = 0.03
    background: Background = "auto"
