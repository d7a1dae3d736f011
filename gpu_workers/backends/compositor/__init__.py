"""The CPU compositor: scenes (scenes.py), the shadow (shadow.py), the picture (paste.py) and the
backend (backend.py). Cut-out and framing live in processors.imaging.framing; their names are
importable from here, where the backends always found them."""

from gpu_workers.backends.compositor.backend import MODEL_VERSION, CompositorBackend
from gpu_workers.backends.compositor.paste import composite, composite_with_placement
from gpu_workers.backends.compositor.scenes import SCENES, Scene, resolve_scene, scene_rng
from processors.imaging.framing import DEFAULT_FILL, PRODUCT_CENTRE_Y, Placement, place

__all__ = [
    "DEFAULT_FILL",
    "MODEL_VERSION",
    "PRODUCT_CENTRE_Y",
    "SCENES",
    "CompositorBackend",
    "Placement",
    "Scene",
    "composite",
    "composite_with_placement",
    "place",
    "resolve_scene",
    "scene_rng",
]
