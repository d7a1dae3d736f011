"""Where the product is in a job's chosen image, so crops can keep it in frame.

The compositor and the diffusers inpainting / image-to-image backends put the product photo on
the canvas by one rule (processors.imaging.framing: the cut-out along its mask, fitted into
``fill`` of the canvas, centred, sitting slightly low), so its mask in the output is known
exactly from the stored reference, its mask and the job's ``fill`` option: no search of the
output is needed, and none can be fooled by a scene that looks like the product. For other
backends (text-to-image, the remote API) nothing was placed and the answer is None: framing
then falls back to centred crops and the rules to segmenting the derivative itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from PIL import Image

from processors.imaging.framing import DEFAULT_FILL, mask_box, parse_fill, place, product_mask
from processors.provenance.source_type import ModelFacts, places_product

# (reference record) -> (product image, its stored mask or None)
ReferenceLoader = Callable[[Mapping[str, Any]], tuple[Image.Image, Image.Image | None]]


def placed_mask(
    product: Image.Image, mask: Image.Image | None, width: int, height: int, fill: float = DEFAULT_FILL
) -> Image.Image | None:
    """The product's mask ("L") on a width x height canvas where framing placed it; None when
    the product's mask is empty (then nothing was placed by the rule).

    framing.cutout and framing.framed do this to the RGBA cut-out; the alpha alone is resized
    here (a quarter of the work), with the same box, size and filter, so the result is the alpha
    those backends pasted.
    """
    alpha = product_mask(product, mask)
    box = mask_box(alpha)
    if box is None:
        return None
    crop = alpha.crop(box)
    placement = place(crop.size, width, height, fill)
    resized = crop.resize((placement.width, placement.height), Image.Resampling.LANCZOS)
    canvas = Image.new("L", (width, height), 0)
    canvas.paste(resized, (placement.x, placement.y))
    return canvas


def job_product_mask(
    job: Mapping[str, Any],
    size: tuple[int, int],
    load_reference: ReferenceLoader,
    models: Mapping[str, ModelFacts] | None = None,
) -> Image.Image | None:
    """The product's mask in ``job``'s chosen image (of ``size``), when its backend placed it."""
    generation = job.get("generation") or {}
    facts = (models or {}).get(str(generation.get("model") or ""))
    if not places_product(str(generation.get("backend") or ""), facts.kind if facts else None):
        return None
    reference = next((r for r in job.get("references") or [] if r.get("role") == "PRODUCT"), None)
    if reference is None:
        return None
    try:
        product, mask = load_reference(reference)
    except FileNotFoundError:
        return None  # gone from storage since quality read it: frame without it, never fail for it
    params = (job.get("route") or {}).get("params") or {}
    try:
        fill = parse_fill(str(params.get("fill", "")))
    except ValueError:
        fill = DEFAULT_FILL  # as the compositor does with an unreadable option
    return placed_mask(product, mask, size[0], size[1], fill)
