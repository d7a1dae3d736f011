"""Generating AROUND the product (inpainting) or from it (image-to-image).

The product is placed on the canvas exactly as the compositor frames it (processors.imaging.
framing), the mask given to an inpainting pipeline is the inverse of the product mask, and with
option ``paste_back=true`` the original product pixels are composited back so they survive the
VAE round trip exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from gpu_workers.backends.base import GenerationItem
from gpu_workers.backends.compositor.scenes import resolve_scene, scene_rng
from gpu_workers.backends.diffusers_backend.options import option, strength
from gpu_workers.registry import ModelSpec
from processors.imaging.framing import DEFAULT_FILL, Placement, cutout, framed, parse_fill, product_mask

__all__ = [
    "CANVAS_BACKGROUND",
    "PlacedProduct",
    "image_kwargs",
    "paste_back_product",
    "place_product",
    "product_mask",
]

CANVAS_BACKGROUND = (127, 127, 127)
# Pipeline kinds that start from an image of the placed product.
IMAGE_KINDS = frozenset({"inpainting", "image-to-image"})


@dataclass(frozen=True)
class PlacedProduct:
    canvas: Image.Image  # RGB: the product on the background
    mask: Image.Image  # L: 255 where the canvas shows the product
    placement: Placement


def place_product(
    product: Image.Image,
    mask: Image.Image | None,
    width: int,
    height: int,
    *,
    fill: float = DEFAULT_FILL,
    scene: str | None = None,
    seed: int = 0,
) -> PlacedProduct:
    """The product on a width x height canvas, framed like the compositor frames it.

    Cropped to the mask's bounding box (margins in the reference must not shrink the product),
    fitted into ``fill`` of the canvas keeping its aspect ratio, centred horizontally and sitting
    slightly low. The background is the compositor's ``scene`` when given, else flat grey.
    """
    cut = cutout(product, mask)
    if cut is None:
        raise ValueError("product mask is empty")
    # Refused rather than clamped (as the compositor does): a model's run is worth a clear error.
    if not 0.0 < fill <= 1.0:
        raise ValueError(f"fill must be in (0, 1], got {fill}")
    cut, placement = framed(cut, width, height, fill)
    if scene is None:
        canvas = Image.new("RGB", (width, height), CANVAS_BACKGROUND)
    else:
        drawn = resolve_scene(scene).draw(width, height, scene_rng(seed))
        canvas = Image.fromarray(np.clip(np.round(drawn), 0, 255).astype(np.uint8), mode="RGB")
    offset = (placement.x, placement.y)
    canvas.paste(cut, offset, cut)
    placed = Image.new("L", (width, height), 0)
    placed.paste(cut.getchannel("A"), offset)
    return PlacedProduct(canvas, placed, placement)


def image_kwargs(items: list[GenerationItem], spec: ModelSpec) -> tuple[dict[str, Any], list[PlacedProduct]]:
    """The init images (and, for inpainting, the repaint masks) of a batch, with each placement."""
    placed = [_place_for(item, spec) for item in items]
    kwargs: dict[str, Any] = {
        "image": [pp.canvas for pp in placed],
        "strength": float(strength(items[0].params, spec)),
    }
    if spec.kind == "inpainting":
        # White = repaint: everything except the product.
        kwargs["mask_image"] = [ImageOps.invert(pp.mask) for pp in placed]
    return kwargs, placed


def paste_back_product(image: Image.Image, placed: PlacedProduct) -> Image.Image:
    """The pipeline's VAE round trip blurs the product; its exact pixels go back."""
    return Image.composite(placed.canvas, image.convert("RGB"), placed.mask)


def _place_for(item: GenerationItem, spec: ModelSpec) -> PlacedProduct:
    if item.product is None:
        raise ValueError(f"{item.request_id}: a {spec.kind} model needs the product image")
    fill = parse_fill(option(item.params, spec, "fill", ""))
    p = item.params
    # img2img keeps the layout of its init image, so it starts from the compositor's scene;
    # inpainting regenerates everything around the product, so a flat canvas is enough.
    scene = item.scene if spec.kind == "image-to-image" else None
    return place_product(item.product, item.mask, p.width, p.height, fill=fill, scene=scene, seed=p.seed)
