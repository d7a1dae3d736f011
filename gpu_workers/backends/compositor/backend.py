"""The CPU compositor backend: the product cut-out on a procedurally drawn scene.

It needs no model, so it is the backend of last resort when GPU pools are down, the fast path in
tests and demos, and a baseline the quality stage can always score.
"""

from __future__ import annotations

import asyncio
import time

from gpu_workers.backends.base import GeneratedImage, GenerationItem
from gpu_workers.backends.compositor.paste import composite_with_placement
from gpu_workers.backends.compositor.scenes import resolve_scene
from processors.imaging.framing import DEFAULT_FILL, parse_fill

MODEL_VERSION = "compositor-1.0.0"


class CompositorBackend:
    """Backend protocol implementation; CPU-bound work runs off the event loop."""

    name = "compositor"
    model_version = MODEL_VERSION

    def batch_key(self, item: GenerationItem) -> tuple[object, ...]:
        return (item.params.width, item.params.height)

    async def generate(self, items: list[GenerationItem]) -> list[GeneratedImage]:
        # Checked before any work so a bad item fails the batch loudly instead of producing a
        # product shot without a product.
        missing = [item.request_id for item in items if item.product is None]
        if missing:
            raise ValueError(f"compositor needs a product reference; missing for {missing}")
        return await asyncio.to_thread(self._generate_all, items)

    async def healthy(self) -> bool:
        return True

    def _generate_all(self, items: list[GenerationItem]) -> list[GeneratedImage]:
        return [self._generate_one(item) for item in items]

    def _generate_one(self, item: GenerationItem) -> GeneratedImage:
        assert item.product is not None
        started = time.perf_counter()
        params = item.params
        scene = resolve_scene(item.scene)
        image, placement = composite_with_placement(
            item.product,
            item.mask,
            params.width,
            params.height,
            scene.name,
            params.seed,
            fill=_fill_option(params.option("fill")),
        )
        return GeneratedImage(
            request_id=item.request_id,
            image=image,
            model_version=MODEL_VERSION,
            compute_ms=(time.perf_counter() - started) * 1000.0,
            extra={"scene": scene.name, "placement": placement.as_text(), "seed": str(params.seed)},
        )


def _fill_option(raw: str) -> float:
    # The backend of last resort never fails a request over an unreadable option (the diffusers
    # backend refuses one): the default framing is a fine picture. Out-of-range values are
    # clamped by framing.place.
    try:
        return parse_fill(raw)
    except ValueError:
        return DEFAULT_FILL
