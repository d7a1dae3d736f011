"""The diffusers backend: models loaded on demand (a small LRU), one batched pipeline call per
group of compatible items.

Throughput comes from batching: a group of compatible requests (same model, size, steps, sampler,
guidance, kind, strength) becomes ONE pipeline call with a list of prompts, so the UNet runs at
batch n instead of n times at batch 1.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict

from PIL import Image

from gpu_workers.backends.base import BackendUnavailable, GeneratedImage, GenerationItem
from gpu_workers.backends.diffusers_backend.inpainting import (
    IMAGE_KINDS,
    PlacedProduct,
    image_kwargs,
    paste_back_product,
)
from gpu_workers.backends.diffusers_backend.loading import LoadedModel, load_pipeline, release, resolve_device
from gpu_workers.backends.diffusers_backend.options import paste_back, strength
from gpu_workers.backends.diffusers_backend.text_to_image import prompt_kwargs, scheduler_for
from gpu_workers.registry import ModelRegistry, ModelRegistryError, ModelSpec

log = logging.getLogger(__name__)


class DiffusersBackend:
    name = "diffusers"

    def __init__(
        self,
        registry: ModelRegistry,
        *,
        device: str | None = None,
        max_loaded: int = 2,
    ) -> None:
        self.registry = registry
        self._device = device
        self.max_loaded = max_loaded
        self._loaded: OrderedDict[str, LoadedModel] = OrderedDict()
        self._load_lock = threading.Lock()
        # One call at a time per backend: a pipeline's scheduler is mutated by every call, and
        # the device runs one batch at a time anyway.
        self._run_lock = threading.Lock()

    @property
    def device(self) -> str:
        if self._device is None:
            self._device = resolve_device()
        return self._device

    # -- Backend protocol ------------------------------------------------------------------

    def batch_key(self, item: GenerationItem) -> tuple[object, ...]:
        p = item.params
        spec = self._spec_or_none(p.model)
        kind = spec.kind if spec else "unknown"
        sampler = p.sampler or (spec.scheduler if spec else "")
        return (
            p.model,
            p.width,
            p.height,
            p.steps,
            sampler,
            p.guidance,
            kind,
            # strength is one value per pipeline call, so it must split batches too.
            strength(p, spec) if spec else "",
        )

    async def generate(self, items: list[GenerationItem]) -> list[GeneratedImage]:
        if not items:
            return []
        keys = {self.batch_key(i) for i in items}
        if len(keys) != 1:
            raise ValueError(f"items are not batch-compatible: {len(keys)} different batch keys")
        loaded = await self.load(items[0].params.model)
        return await asyncio.to_thread(self._run, loaded, items)

    async def healthy(self) -> bool:
        try:
            import diffusers  # noqa: F401
            import torch  # noqa: F401
        except ImportError:
            return False
        return True

    # -- model management ------------------------------------------------------------------

    async def load(self, model: str) -> LoadedModel:
        """Load (or reuse) a model's pipeline; call at start-up to warm the worker."""
        return await asyncio.to_thread(self._ensure_loaded, model)

    def loaded_models(self) -> list[str]:
        return list(self._loaded)

    def close(self) -> None:
        with self._load_lock:
            while self._loaded:
                self._evict_oldest()

    def _spec_or_none(self, model: str) -> ModelSpec | None:
        return self.registry.get(model) if model in self.registry else None

    def _ensure_loaded(self, model: str) -> LoadedModel:
        with self._load_lock:
            hit = self._loaded.get(model)
            if hit is not None:
                self._loaded.move_to_end(model)
                return hit
            spec = self._spec_or_none(model)
            if spec is None or spec.backend != self.name:
                raise BackendUnavailable(f"model {model!r} is not a diffusers model here")
            problems = spec.problems()
            if problems:
                raise BackendUnavailable("; ".join(problems))
            while len(self._loaded) >= self.max_loaded:
                self._evict_oldest()
            started = time.perf_counter()
            loaded = load_pipeline(spec, self.device, self._version(spec))
            log.info(
                "loaded model %s (%s) on %s as %s in %.1fs",
                model,
                loaded.version,
                loaded.device,
                loaded.dtype_name,
                time.perf_counter() - started,
            )
            self._loaded[model] = loaded
            return loaded

    def _version(self, spec: ModelSpec) -> str:
        try:
            return self.registry.version(spec.name)
        except ModelRegistryError as exc:
            raise BackendUnavailable(str(exc)) from exc

    def _evict_oldest(self) -> None:
        _, old = self._loaded.popitem(last=False)
        device = old.device
        del old
        release(device)

    # -- inference (worker thread) ---------------------------------------------------------

    def _run(self, loaded: LoadedModel, items: list[GenerationItem]) -> list[GeneratedImage]:
        import torch

        spec = loaded.spec
        sampler = items[0].params.sampler or spec.scheduler
        with self._run_lock:
            scheduler = scheduler_for(loaded, sampler)
            loaded.pipe.scheduler = scheduler
            call_kwargs = prompt_kwargs(loaded, items)
            placements: list[PlacedProduct | None] = [None] * len(items)
            if spec.kind in IMAGE_KINDS:
                extra_kwargs, placed = image_kwargs(items, spec)
                call_kwargs.update(extra_kwargs)
                placements = list(placed)
            started = time.perf_counter()
            with torch.inference_mode():
                output = loaded.pipe(**call_kwargs)
            elapsed_ms = (time.perf_counter() - started) * 1000.0
        images: list[Image.Image] = list(output.images)
        if len(images) != len(items):
            raise RuntimeError(f"pipeline returned {len(images)} images for {len(items)} items")
        n = len(items)
        extra = {
            "batch_size": str(n),
            "sampler": sampler,
            "scheduler": type(scheduler).__name__,
            "dtype": loaded.dtype_name,
            "device": loaded.device,
            "kind": spec.kind,
            "batch_ms": f"{elapsed_ms:.1f}",
        }
        results: list[GeneratedImage] = []
        for item, image, placement in zip(items, images, placements, strict=True):
            item_extra = dict(extra)
            if placement is not None:
                item_extra["placement"] = placement.placement.as_text()
                if paste_back(item.params, spec):
                    image = paste_back_product(image, placement)
                    item_extra["paste_back"] = "true"
            results.append(
                GeneratedImage(
                    request_id=item.request_id,
                    image=image,
                    model_version=loaded.version,
                    compute_ms=elapsed_ms / n,
                    extra=item_extra,
                )
            )
        return results
