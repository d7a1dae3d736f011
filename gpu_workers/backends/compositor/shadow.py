"""The product's shadow on the scene: a soft offset silhouette plus a contact shadow at its base."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from gpu_workers.backends.compositor.scenes import RGB
from processors.imaging.framing import Placement


def shadow_alpha(alpha: Image.Image, placement: Placement, width: int, height: int) -> np.ndarray:
    """Shadow strength in [0, 1]: a soft offset silhouette plus a contact shadow at the base."""
    short = min(width, height)
    drop = Image.new("L", (width, height), 0)
    offset = (round(0.012 * width), round(0.018 * height))
    drop.paste(alpha, (placement.x + offset[0], placement.y + offset[1]))
    drop = drop.filter(ImageFilter.GaussianBlur(radius=max(1.0, 0.025 * short)))

    contact = Image.new("L", (width, height), 0)
    base_y = placement.y + placement.height
    half_w = 0.45 * placement.width
    half_h = max(2.0, 0.035 * placement.height)
    centre_x = placement.x + placement.width / 2
    ImageDraw.Draw(contact).ellipse(
        (centre_x - half_w, base_y - half_h, centre_x + half_w, base_y + half_h), fill=255
    )
    contact = contact.filter(ImageFilter.GaussianBlur(radius=max(1.0, 0.02 * short)))

    strength = 0.55 * np.asarray(drop, np.float32) + 0.8 * np.asarray(contact, np.float32)
    return np.clip(strength / 255.0, 0.0, 1.0)


def apply_shadow(background: np.ndarray, shadow: np.ndarray, colour: RGB, opacity: float) -> np.ndarray:
    weight = (shadow * opacity)[..., None]
    # The same two products and one sum as written out, the sum taken into the first product.
    shaded = background * (1.0 - weight)
    shaded += np.asarray(colour, np.float32) * weight
    return shaded
