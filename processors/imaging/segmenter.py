"""Model-based product masks ("L", 255 = product), loaded from a local path only.

The classical backdrop segmentation in ``masks.py`` stays the default; a segmentation model is
for catalogs whose photos are not plain studio shots (lifestyle photos, busy backdrops).

Why a transformers model saved with ``save_pretrained`` rather than a torchvision state dict:
the folder is self-describing. The architecture config, the label names (``id2label``, so the
foreground can be configured as ``["product"]`` rather than a bare index) and the preprocessing
(``preprocessor_config.json``: size, mean, std) travel with the weights, so configuration only
names a path. A torchvision state dict needs the architecture and normalisation hard-coded here,
and torchvision's own segmentation weights are VOC/COCO classes with no "product" class anyway.
It is also the convention the diffusers backend and the model registry's content hash already use
(``*.json`` + ``*.safetensors`` in a folder). Any ``AutoModelForSemanticSegmentation`` whose output
carries per-pixel ``logits`` of shape (batch, labels, h, w) works: Segformer, DPT, UperNet, ...

torch and transformers are imported lazily, so CPU stages that only use the classical mask do not
pay for (or need) the ml extra.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from PIL import Image

from processors.imaging.masks import (
    DEFAULT_PARAMS,
    SegmentationParams,
    compute_mask,
    cutout_alpha,
    mask_coverage,
)

log = logging.getLogger(__name__)

BACKGROUND_LABEL = 0
# The model runs at its processor's input size whatever the image size; its logits are upsampled
# to at most this many pixels a side and the mask is then resized. Upsampling a many-label logit
# tensor to a camera-sized frame would cost gigabytes for no visible gain.
MAX_LOGIT_SIDE = 1024
# Plausible product coverage for a model mask; outside it the classical mask is used instead.
MIN_MODEL_COVERAGE = 0.002
MAX_MODEL_COVERAGE = 0.98

MaskSource = Literal["alpha", "model", "classical", "classical_fallback"]


class SegmenterError(Exception):
    """A segmentation model that cannot be loaded or configured (missing path, bad labels...)."""


class Segmenter(Protocol):
    def mask(self, image: Image.Image) -> Image.Image: ...


@dataclass(frozen=True)
class ModelSegmenter:
    model: Any  # a transformers PreTrainedModel; typed loosely so torch stays a lazy import
    processor: Any  # its image processor
    path: Path
    foreground_labels: frozenset[int]
    device: str = "cpu"

    @classmethod
    def from_path(
        cls,
        path: Path | str,
        device: str = "cpu",
        *,
        foreground_labels: Iterable[int | str] | None = None,
        background_label: int = BACKGROUND_LABEL,
    ) -> ModelSegmenter:
        """Load a ``save_pretrained`` folder (model + image processor config), never from a hub.

        ``foreground_labels`` are label ids or names (from the model's ``id2label``); by default
        every label except ``background_label`` is product.
        """
        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise SegmenterError(f"segmentation model folder not found: {folder}")
        try:
            from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation
        except ImportError as exc:
            raise SegmenterError(
                f"cannot load the segmentation model at {folder}: transformers is not installed "
                "(install the 'ml' extra)"
            ) from exc
        try:
            processor = AutoImageProcessor.from_pretrained(folder, local_files_only=True)
            model = AutoModelForSemanticSegmentation.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError, KeyError) as exc:
            # transformers reports a missing config or weights file as OSError/ValueError with a
            # hub-oriented message; name the folder, which is what the operator has to fix.
            raise SegmenterError(f"cannot load the segmentation model at {folder}: {exc}") from exc
        model.to(device)
        model.eval()
        labels = _resolve_labels(model.config, foreground_labels, background_label, folder)
        return cls(model=model, processor=processor, path=folder, foreground_labels=labels, device=device)

    def mask(self, image: Image.Image) -> Image.Image:
        """Product mask of ``image``: "L", the image's size, 255 where the argmax label is product."""
        import torch
        import torch.nn.functional as F

        rgb = image.convert("RGB")
        inputs = self.processor(images=rgb, return_tensors="pt")
        pixel_values = inputs["pixel_values"].to(self.device)
        scale = min(1.0, MAX_LOGIT_SIDE / max(rgb.size))
        work_size = (max(1, round(rgb.height * scale)), max(1, round(rgb.width * scale)))
        with torch.inference_mode():
            logits = self.model(pixel_values=pixel_values).logits
            # Upsample the logits, not the label map: interpolating scores gives smooth boundaries
            # where a nearest-neighbour label map from the 1/4-resolution head would be blocky.
            logits = F.interpolate(logits.float(), size=work_size, mode="bilinear", align_corners=False)
            labels = logits.argmax(dim=1)[0].cpu().numpy()
        foreground = np.isin(labels, sorted(self.foreground_labels))
        mask = Image.fromarray(np.where(foreground, 255, 0).astype(np.uint8), mode="L")
        if mask.size != rgb.size:
            mask = mask.resize(rgb.size, Image.Resampling.BILINEAR)
        return mask


def _resolve_labels(
    config: Any, requested: Iterable[int | str] | None, background: int, folder: Path
) -> frozenset[int]:
    id2label = {int(k): str(v) for k, v in (getattr(config, "id2label", None) or {}).items()}
    num_labels = int(getattr(config, "num_labels", len(id2label)))
    if requested is None:
        labels = frozenset(i for i in range(num_labels) if i != background)
    else:
        by_name = {name.lower(): i for i, name in id2label.items()}
        resolved: set[int] = set()
        for label in requested:
            if isinstance(label, str) and not label.isdigit():
                if label.lower() not in by_name:
                    raise SegmenterError(
                        f"unknown foreground label {label!r} for the model at {folder}; "
                        f"labels: {sorted(id2label.values())}"
                    )
                resolved.add(by_name[label.lower()])
            else:
                index = int(label)
                if not 0 <= index < num_labels:
                    raise SegmenterError(
                        f"foreground label {index} out of range for the model at {folder} "
                        f"({num_labels} labels)"
                    )
                resolved.add(index)
        labels = frozenset(resolved)
    if not labels:
        raise SegmenterError(f"no foreground labels for the model at {folder}: it could never find a product")
    return labels


@dataclass(frozen=True)
class ProductMask:
    image: Image.Image  # "L", 255 = product
    source: MaskSource  # recorded on the job, so lineage says which method made the mask
    model_coverage: float | None = None  # the model mask's coverage, when a model ran


def segment_product(
    image: Image.Image,
    segmenter: Segmenter | None,
    params: SegmentationParams = DEFAULT_PARAMS,
    *,
    min_coverage: float = MIN_MODEL_COVERAGE,
    max_coverage: float = MAX_MODEL_COVERAGE,
) -> ProductMask:
    """The product mask and which method produced it (see ``compute_product_mask``)."""
    alpha = cutout_alpha(image)
    if alpha is not None:
        # A real cut-out is ground truth from the catalog; a model would only approximate it (and
        # sees the transparent backdrop as whatever colour hides under the alpha).
        return ProductMask(alpha, "alpha")
    if segmenter is None:
        return ProductMask(compute_mask(image, params), "classical")
    mask = segmenter.mask(image)
    coverage = mask_coverage(mask)
    if min_coverage <= coverage <= max_coverage:
        return ProductMask(mask, "model", coverage)
    # A degenerate model mask is a model failure, not a finding. Empty: inpainting would treat
    # every pixel as scene (the product is regenerated, i.e. lost) and preservation has nothing to
    # compare. Full frame: the model did not separate anything, which is what an out-of-domain
    # photo typically collapses to. The classical mask is a better guess in both cases, and it
    # has its own, deliberate policy for close-ups with no visible backdrop.
    log.info(
        "segmentation model mask covers %.4f of the frame (outside [%s, %s]); using the classical mask",
        coverage,
        min_coverage,
        max_coverage,
    )
    return ProductMask(compute_mask(image, params), "classical_fallback", coverage)


def compute_product_mask(
    image: Image.Image,
    segmenter: Segmenter | None,
    params: SegmentationParams = DEFAULT_PARAMS,
) -> Image.Image:
    """Product mask ("L", 255 = product): a cut-out's alpha, else the model's mask when a
    segmenter is configured and its mask is plausible, else ``masks.compute_mask``."""
    return segment_product(image, segmenter, params).image
