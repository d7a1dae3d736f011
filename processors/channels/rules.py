"""Marketplace rules, checked on a derivative after it is encoded: what a marketplace would see.

Each rule looks at the decoded file and at where the product is in it (the mask that went
through the derivative's framing, or, when none is known, the studio segmentation of the file
itself) and gives a Verdict: passed or not, what was measured, what was required. A rule set in
presets.yaml names rules and their parameters; a derivative that breaks any is held for review
with the rule named (render.py).

- background_white {margin_px}: every pixel farther than margin_px from the product is RGB
  (255, 255, 255), opaque. The margin leaves out the product's soft rim and JPEG's ringing
  around it (an 8x8 block's DCT, twice over for 4:2:0 chroma, spreads up to 16 px; 24 px is
  what q >= 80 files measured clean at), so the rule means "pure white" where a viewer sees
  background, and a grey, tinted or textured backdrop still fails.
- min_product_fill F: the product's bounding box spans at least F of the frame, on the axis
  where it spans most (how marketplaces word "the product fills 85% of the image").
- min_longest_side N: the image's longest side is at least N px (zoom needs 1000).
- min_size [W, H]: the image is at least W x H px (shopping feeds refuse smaller ones).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from processors.imaging.framing import VISIBLE_ALPHA
from processors.imaging.masks import binary_dilate, compute_mask


@dataclass(frozen=True)
class Verdict:
    rule_set: str
    rule: str
    passed: bool
    measured: str
    required: str

    @property
    def name(self) -> str:
        return f"{self.rule_set}.{self.rule}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.name,
            "passed": self.passed,
            "measured": self.measured,
            "required": self.required,
        }

    def describe(self) -> str:
        outcome = "passed" if self.passed else "failed"
        return f"{self.name} {outcome} (measured {self.measured}; required {self.required})"


@dataclass(frozen=True)
class Observed:
    """A decoded derivative as the rules see it."""

    rgba: np.ndarray  # (H, W, 4) uint8
    product: np.ndarray  # (H, W) bool: where the product is

    @property
    def width(self) -> int:
        return int(self.rgba.shape[1])

    @property
    def height(self) -> int:
        return int(self.rgba.shape[0])


def observe(data: bytes, product_mask: Image.Image | None) -> Observed:
    """Decode ``data`` and say where its product is (``product_mask``, "L" at the file's size,
    or the segmentation of the decoded pixels when it is None)."""
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        rgba = image.convert("RGBA")
    if product_mask is None:
        product_mask = compute_mask(rgba)
    if product_mask.size != rgba.size:
        raise ValueError(f"product mask is {product_mask.size}, the file is {rgba.size}")
    product = np.asarray(product_mask.convert("L"), np.uint8) >= VISIBLE_ALPHA
    return Observed(np.asarray(rgba, np.uint8), product)


# --- the rules -------------------------------------------------------------------------------
# Each takes what was observed and its parameter, and returns (passed, measured, required).

Outcome = tuple[bool, str, str]


def background_white(observed: Observed, parameter: Any) -> Outcome:
    margin = int((parameter or {}).get("margin_px", 24)) if isinstance(parameter, dict) else int(parameter)
    near_product = binary_dilate(observed.product, margin) if margin > 0 else observed.product
    background = observed.rgba[~near_product]
    required = f"every pixel over {margin} px from the product RGB 255"
    if background.size == 0:
        return True, "no background beyond the margin", required
    white = np.all(background == 255, axis=1)
    off = int(np.count_nonzero(~white))
    if off == 0:
        return True, "all background pixels RGB 255", required
    darkest = int(background[~white][:, :3].min())
    share = off / len(white)
    return False, f"{share:.2%} of background pixels not RGB 255 (darkest channel {darkest})", required


def min_product_fill(observed: Observed, parameter: Any) -> Outcome:
    minimum = float(parameter)
    rows = np.flatnonzero(observed.product.any(axis=1))
    cols = np.flatnonzero(observed.product.any(axis=0))
    required = f">= {minimum:.0%} of the frame"
    if rows.size == 0:
        return False, "no product found", required
    fill = max((cols[-1] - cols[0] + 1) / observed.width, (rows[-1] - rows[0] + 1) / observed.height)
    return fill >= minimum, f"{fill:.1%}", required


def min_longest_side(observed: Observed, parameter: Any) -> Outcome:
    minimum = int(parameter)
    longest = max(observed.width, observed.height)
    return longest >= minimum, f"{longest} px", f">= {minimum} px"


def min_size(observed: Observed, parameter: Any) -> Outcome:
    width, height = (int(v) for v in parameter)
    ok = observed.width >= width and observed.height >= height
    return ok, f"{observed.width}x{observed.height}", f">= {width}x{height}"


RULES: dict[str, Callable[[Observed, Any], Outcome]] = {
    "background_white": background_white,
    "min_product_fill": min_product_fill,
    "min_longest_side": min_longest_side,
    "min_size": min_size,
}


def validate_parameter(rule: str, parameter: Any) -> None:
    """ValueError when ``parameter`` is not one ``rule`` can use (checked when presets load,
    so a typo in presets.yaml stops a stage at start, not a job at run time)."""
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r} (known: {', '.join(sorted(RULES))})")
    probe = Observed(np.full((2, 2, 4), 255, np.uint8), np.ones((2, 2), bool))
    try:
        RULES[rule](probe, parameter)
    except (TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"rule {rule}: unusable parameter {parameter!r} ({exc})") from exc


@dataclass(frozen=True)
class RuleCheck:
    rule_set: str
    rule: str
    parameter: Any

    def run(self, observed: Observed) -> Verdict:
        passed, measured, required = RULES[self.rule](observed, self.parameter)
        return Verdict(self.rule_set, self.rule, bool(passed), measured, required)


def check(
    data: bytes, product_mask: Image.Image | None, checks: tuple[RuleCheck, ...]
) -> tuple[Verdict, ...]:
    """Every check's verdict on the encoded file ``data``."""
    if not checks:
        return ()
    observed = observe(data, product_mask)
    return tuple(c.run(observed) for c in checks)
