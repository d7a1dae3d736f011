"""The compositor's picture: scene, grain, shadow, then the product's own pixels on top.

The product's pixels are pasted as they are (resampled, never recoloured), which is the same
promise the inpainting backends make. Cut-out and framing are processors.imaging.framing's, so
every backend puts the product in the same place.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field

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
    cut, placement, shadow = _CUTOUTS.framed(product, mask, width, height, fill)

    rng = scene_rng(seed)
    background = chosen.draw(width, height, rng)
    background = _add_grain(background, rng)
    background = apply_shadow(background, shadow, chosen.shadow_rgb, chosen.shadow_opacity)

    # Rounded and clipped in place: the array is this call's own.
    pixels = np.clip(np.round(background, out=background), 0, 255, out=background).astype(np.uint8)
    canvas = Image.fromarray(pixels, mode="RGB")
    # Pasting through the alpha keeps every fully-masked product pixel exactly as resampled.
    canvas.paste(cut, (placement.x, placement.y), cut)
    return canvas, placement


_Framing = tuple[Image.Image, Placement, np.ndarray]


@dataclass
class _Entry:
    # The images themselves are held, so their ids cannot be reused while the entry lives.
    product: Image.Image
    mask: Image.Image | None
    cut: Image.Image
    # Per canvas: the framed cut-out, its placement and the shadow it casts (read, never written).
    framed: dict[tuple[int, int, float], _Framing] = field(default_factory=dict)


class _CutoutCache:
    """The cleaned cut-out of a product, and its framings per canvas (with the shadow each casts),
    for the last few products.

    Cleaning the rim (framing._decontaminate_edges), resampling the cut-out and blurring its
    shadow cost more than drawing the scene, and every job of one product (each channel, locale,
    retry and variant) asks for the same ones. Keyed by the decoded images' identity: the
    worker's reference cache hands out one object per stored reference, and an entry holds its
    images, so a key can only name those pixels. Pillow images are never changed in place here
    (paste reads the cut-out), nor is a kept shadow (read-only)."""

    def __init__(self, products: int = 8, framings: int = 8) -> None:
        self._entries: OrderedDict[tuple[int, int], _Entry] = OrderedDict()
        self._products = products
        self._framings = framings
        self._lock = threading.Lock()

    def framed(
        self, product: Image.Image, mask: Image.Image | None, width: int, height: int, fill: float
    ) -> _Framing:
        key = (id(product), id(mask))
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.product is product and entry.mask is mask:
                self._entries.move_to_end(key)
                done = entry.framed.get((width, height, fill))
                if done is not None:
                    return done
            else:
                entry = None
        if entry is None:
            entry = _Entry(product, mask, _product_cutout(product, mask))
        cut, placement = framed(entry.cut, width, height, fill)
        shadow = shadow_alpha(cut.getchannel("A"), placement, width, height)
        shadow.setflags(write=False)  # shared by every job of this framing
        done = (cut, placement, shadow)
        with self._lock:
            if len(entry.framed) >= self._framings:
                entry.framed.clear()
            entry.framed[(width, height, fill)] = done
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self._products:
                self._entries.popitem(last=False)
        return done


_CUTOUTS = _CutoutCache()


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
