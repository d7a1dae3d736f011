"""The compositor's picture: scene, grain, shadow, then the product's own pixels on top.

The product's pixels are pasted as they are (resampled, never recoloured), which is the same
promise the inpainting backends make. Cut-out and framing are processors.imaging.framing's, so
every backend puts the product in the same place.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from gpu_workers.backends.compositor.scenes import resolve_scene, scene_rng
from gpu_workers.backends.compositor.shadow import apply_shadow, shadow_alpha
from processors.imaging.framing import DEFAULT_FILL, Placement, cutout, framed


def composite(
    product: Image.Image,
    mask: Image.Image | None,
    width: int,
    height: int,
    scene: str,
    seed: int,
    fill: float = DEFAULT_FILL,
) -> Image.Image:
    """The product on ``scene`` at ``width`` x ``height``, RGB. Same inputs, same pixels."""
    return composite_with_placement(product, mask, width, height, scene, seed, fill)[0]


def composite_with_placement(
    product: Image.Image,
    mask: Image.Image | None,
    width: int,
    height: int,
    scene: str,
    seed: int,
    fill: float = DEFAULT_FILL,
) -> tuple[Image.Image, Placement]:
    if width <= 0 or height <= 0:
        raise ValueError(f"canvas size must be positive, got {width}x{height}")
    chosen = resolve_scene(scene)
    cut, placement = framed(_product_cutout(product, mask), width, height, fill)

    rng = scene_rng(seed)
    background = chosen.draw(width, height, rng)
    background = _add_grain(background, rng)
    shadow = shadow_alpha(cut.getchannel("A"), placement, width, height)
    background = apply_shadow(background, shadow, chosen.shadow_rgb, chosen.shadow_opacity)

    canvas = Image.fromarray(np.clip(np.round(background), 0, 255).astype(np.uint8), mode="RGB")
    # Pasting through the alpha keeps every fully-masked product pixel exactly as resampled.
    canvas.paste(cut, (placement.x, placement.y), cut)
    return canvas, placement


def _product_cutout(product: Image.Image, mask: Image.Image | None) -> Image.Image:
    """The framing cut-out with its rim cleaned. An empty mask keeps the whole (invisible)
    frame: the compositor is the backend of last resort and always returns an image; the
    quality stage then finds no product in it and says so."""
    found = cutout(product, mask, clean_rim=True)
    if found is None:
        found = cutout(product, mask, min_alpha=0, clean_rim=True)  # every pixel: the whole frame
    assert found is not None
    return found


def _add_grain(background: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # A little monochrome grain hides 8-bit banding in the smooth gradients.
    grain = rng.normal(0.0, 1.2, size=background.shape[:2]).astype(np.float32)
    return background + grain[..., None]
