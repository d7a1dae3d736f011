"""Product cut-out and framing: how the product is lifted out of its reference and placed on a canvas.

One rule for every backend and for the preservation check, so they agree on what "the product"
is and where it goes: the CPU compositor pastes the cut-out on a drawn scene, the diffusers
backend places it on the canvas it inpaints around, and the quality stage searches the output
for the same cut-out. They differ only in the options they pass:

- ``min_alpha``: the compositor and diffusers crop to the product's visible extent
  (VISIBLE_ALPHA); the preservation check crops to its solid core (SOLID_ALPHA), because the soft
  rim blends with whatever background the output has and says nothing about preservation.
- ``clean_rim``: the compositor replaces the old backdrop's colour in a photo's rim pixels so
  the product carries no halo onto its new scene. The diffusers backend does not (its rim is
  repainted or pasted back over its own flat canvas) and the check must see the reference as it
  is, so both leave it off.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from processors.imaging.masks import compute_mask, cutout_alpha

# The product fits in this fraction of the canvas on both axes.
DEFAULT_FILL = 0.70
# Any fill asked for is clamped to this range: a smaller product would be a speck.
MIN_FILL, MAX_FILL = 0.05, 1.0
# Vertical centre of the product as a fraction of the height: slightly low, so it sits on the
# "floor" of the scene and leaves headroom, as a photographer would frame it.
PRODUCT_CENTRE_Y = 0.56
# Mask values at or below this are background when cropping to the product.
BACKGROUND_MAX = 8
VISIBLE_ALPHA = BACKGROUND_MAX + 1
# Mask values at or above this are solid product.
SOLID_ALPHA = 0.9 * 255
# How many pixels deep solid product colour is grown into a segmented mask's soft rim.
_RIM_PASSES = 4

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Placement:
    """Where the product landed on the canvas, in pixels."""

    x: int
    y: int
    width: int
    height: int

    def as_text(self) -> str:
        return f"{self.x},{self.y},{self.width},{self.height}"


# --- the cut-out -----------------------------------------------------------------------------


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB pixels of ``image``; palette and transparent images go through RGBA (Pillow warns
    when a palette image with transparency is converted to RGB directly; the colours are the same)."""
    if image.mode == "RGB":
        return image
    if image.mode in ("P", "PA") or "transparency" in image.info:
        return image.convert("RGBA").convert("RGB")
    return image.convert("RGB")


def product_mask(product: Image.Image, mask: Image.Image | None) -> Image.Image:
    """The given mask ("L", at the product's size), else the product's own (masks.compute_mask)."""
    alpha = (compute_mask(product) if mask is None else mask).convert("L")
    if alpha.size != product.size:
        alpha = alpha.resize(product.size, Image.Resampling.BILINEAR)
    return alpha


def mask_box(mask: Image.Image, min_alpha: float = VISIBLE_ALPHA) -> Box | None:
    """Bounding box of the mask's values at or above ``min_alpha`` (None when there are none)."""
    return mask.point(lambda v: 255 if v >= min_alpha else 0).getbbox()


def cutout(
    product: Image.Image,
    mask: Image.Image | None = None,
    *,
    min_alpha: float = VISIBLE_ALPHA,
    clean_rim: bool = False,
) -> Image.Image | None:
    """The product as RGBA (alpha = mask) cropped to its mask; None when the mask is empty.

    RGBA rather than RGB and a separate mask because Pillow resizes RGBA premultiplied, so the
    arbitrary colours under transparent pixels do not bleed into the product's edge.
    """
    alpha = product_mask(product, mask)
    rgb = to_rgb(product)
    if clean_rim and cutout_alpha(product) is None:
        rgb = _decontaminate_edges(rgb, alpha)
    box = mask_box(alpha, min_alpha)
    if box is None:
        return None
    rgba = rgb.copy()
    rgba.putalpha(alpha)
    return rgba.crop(box)


def _decontaminate_edges(rgb: Image.Image, mask: Image.Image) -> Image.Image:
    """Replace the photo backdrop's colour in the partially covered rim pixels.

    In a packshot a rim pixel is a blend of product and backdrop; pasted as is on another scene
    it leaves a faint halo of the old backdrop. Rim pixels take the colour of the solid product
    next to them (the alpha still does the blending); where there is no solid pixel nearby (thin
    parts), the colour is unmixed from the backdrop estimate: C = a*F + (1 - a)*B. Fully covered
    pixels (a = 1) are left exactly as they are.
    """
    alpha = np.asarray(mask, np.float32) / 255.0
    backdrop = alpha < BACKGROUND_MAX / 255.0
    rim = (alpha < 1.0) & ~backdrop
    if not rim.any() or backdrop.mean() < 0.01:
        return rgb
    colours = np.asarray(rgb, np.float32)
    background = np.median(colours[backdrop], axis=0)
    # Only the box around the product changes: outside it every pixel is backdrop, never rim and
    # never known, so the neighbour sums inside the box (one pixel of backdrop around it) are
    # the same as over the whole frame.
    rows, cols = np.nonzero(~backdrop)
    top, left = max(0, int(rows.min()) - 1), max(0, int(cols.min()) - 1)
    bottom, right = int(rows.max()) + 2, int(cols.max()) + 2
    box = (slice(top, bottom), slice(left, right))
    whole = colours
    colours, alpha, rim = colours[box], alpha[box], rim[box]
    out = colours.copy()

    a = alpha[rim][:, None]
    out[rim] = np.clip((colours[rim] - (1.0 - a) * background) / np.maximum(a, 1e-3), 0, 255)

    known = alpha >= 1.0
    for _ in range(_RIM_PASSES):
        grown_sum, grown_count = _neighbour_sum(np.where(known[..., None], out, 0.0), known)
        reach = rim & ~known & (grown_count > 0)
        if not reach.any():
            break
        out[reach] = grown_sum[reach] / grown_count[reach][:, None]
        known = known | reach
    result = whole.copy()
    result[box] = out
    return Image.fromarray(np.round(result).astype(np.uint8), mode="RGB")


def _neighbour_sum(values: np.ndarray, present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum of the 8 neighbours' values and how many of them are present."""
    total = np.zeros_like(values)
    count = np.zeros(present.shape, np.float32)
    padded_v = np.pad(values, ((1, 1), (1, 1), (0, 0)))
    padded_p = np.pad(present.astype(np.float32), 1)
    height, width = present.shape
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy == dx == 0:
                continue
            total += padded_v[1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width]
            count += padded_p[1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width]
    return total, count


# --- framing ---------------------------------------------------------------------------------


def parse_fill(raw: str) -> float:
    """A request's ``fill`` option as a number (empty: DEFAULT_FILL); ValueError when it is not one."""
    return float(raw) if raw.strip() else DEFAULT_FILL


def place(size: tuple[int, int], width: int, height: int, fill: float = DEFAULT_FILL) -> Placement:
    """Where a product of ``size`` goes on a width x height canvas: fitted into ``fill`` of it
    keeping its aspect ratio, centred horizontally and sitting slightly low."""
    fill = min(max(fill, MIN_FILL), MAX_FILL)
    scale = min(fill * width / size[0], fill * height / size[1])
    w = max(1, min(width, round(size[0] * scale)))
    h = max(1, min(height, round(size[1] * scale)))
    x = (width - w) // 2
    y = min(max(0, round(PRODUCT_CENTRE_Y * height - h / 2)), height - h)
    return Placement(x, y, w, h)


def framed(
    cut: Image.Image, width: int, height: int, fill: float = DEFAULT_FILL
) -> tuple[Image.Image, Placement]:
    """The cut-out resized to its place on a width x height canvas, and that place."""
    placement = place(cut.size, width, height, fill)
    # Pillow returns a copy when the size is unchanged, so an unscaled product is not resampled.
    return cut.resize((placement.width, placement.height), Image.Resampling.LANCZOS), placement
