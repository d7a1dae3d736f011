"""Diffusers pipelines loaded from local paths: loading (loading.py), speed switches (speed.py),
the batched text-to-image call (text_to_image.py), inpainting around the placed product
(inpainting.py), request options (options.py) and the backend itself (backend.py).

torch and diffusers are imported lazily, so the rest of the worker runs without the ml extra.
The names other code imports stay importable from here.
"""

from gpu_workers.backends.diffusers_backend.backend import DiffusersBackend
from gpu_workers.backends.diffusers_backend.inpainting import (
    CANVAS_BACKGROUND,
    PlacedProduct,
    place_product,
    product_mask,
)
from gpu_workers.backends.diffusers_backend.loading import LoadedModel, resolve_device
from gpu_workers.backends.diffusers_backend.speed import apply_speed_options
from gpu_workers.backends.diffusers_backend.text_to_image import SCHEDULERS, scheduler_for

__all__ = [
    "CANVAS_BACKGROUND",
    "SCHEDULERS",
    "DiffusersBackend",
    "LoadedModel",
    "PlacedProduct",
    "apply_speed_options",
    "place_product",
    "product_mask",
    "resolve_device",
    "scheduler_for",
]
