"""Diffusers pipelines loaded from local paths, one batched pipeline call per group of items.

Throughput comes from batching: a group of compatible requests (same model, size, steps, sampler,
guidance, kind) becomes ONE pipeline call with a list of prompts, so the UNet runs at batch n
instead of n times at batch 1. Each item still gets its own ``torch.Generator`` seeded with its own
seed, so an item's image depends only on its seed and parameters, never on what it was batched
with, and any image can be regenerated from its lineage.

Inpainting generates AROUND the product: the product is placed on the canvas, the mask given to
the pipeline is the inverse of the product mask, and with option ``paste_back=true`` the original
product pixels are composited back so they survive the VAE round trip exactly.

torch and diffusers are imported lazily so the rest of the worker runs without the ml extra.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageOps

from gpu_workers.backends.base import (
    BackendUnavailable,
    GeneratedImage,
    GenerationItem,
    GenerationParams,
)
from gpu_workers.backends.compositor import (
    DEFAULT_FILL,
    Placement,
    place,
    resolve_scene,
)
from gpu_workers.registry import ModelRegistry, ModelRegistryError, ModelSpec
from processors.imaging.masks import compute_mask

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

# Sampler names in requests -> diffusers scheduler classes (built from the model's own config).
SCHEDULERS: dict[str, str] = {
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "ddim": "DDIMScheduler",
    "dpm": "DPMSolverMultistepScheduler",
    "dpmpp_2m": "DPMSolverMultistepScheduler",
    "dpm++": "DPMSolverMultistepScheduler",
}
_PIPELINES = {
    "text-to-image": "AutoPipelineForText2Image",
    "inpainting": "AutoPipelineForInpainting",
    "image-to-image": "AutoPipelineForImage2Image",
}
_DEFAULT_STRENGTH = {"text-to-image": "", "inpainting": "1.0", "image-to-image": "0.75"}
CANVAS_BACKGROUND = (127, 127, 127)
# Mask values at or below this are background when cropping to the product (as the compositor).
_BBOX_THRESHOLD = 8


@dataclass
class LoadedModel:
    spec: ModelSpec
    pipe: Any
    version: str
    device: str
    dtype_name: str
    schedulers: dict[str, Any] = field(default_factory=dict)


def resolve_device(requested: str | None = None) -> str:
    import torch

    if requested:
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


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
            _strength(p, spec) if spec else "",
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
            loaded = self._load_pipeline(spec)
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

    def _evict_oldest(self) -> None:
        _, old = self._loaded.popitem(last=False)
        device = old.device
        del old
        gc.collect()
        if device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()

    def _load_pipeline(self, spec: ModelSpec) -> LoadedModel:
        import diffusers
        import torch

        assert spec.path is not None  # problems() guarantees it for diffusers models
        device = self.device
        # Half precision on CPU is slow or unsupported; CPU always runs float32.
        dtype_name = "float32" if device == "cpu" else spec.dtype
        dtype = getattr(torch, dtype_name)
        kwargs: dict[str, Any] = {_dtype_kwarg(): dtype, "local_files_only": True}
        index = json.loads((spec.path / "model_index.json").read_text())
        if "safety_checker" in index:
            # Output screening is the quality stage's job; SD's checker would black out images.
            kwargs.update(safety_checker=None, requires_safety_checker=False)
        pipeline_cls = getattr(diffusers, _PIPELINES[spec.kind])
        _quiet_progress_bars()
        try:
            pipe = pipeline_cls.from_pretrained(str(spec.path), **kwargs)
        except (OSError, ValueError) as exc:
            raise BackendUnavailable(f"model {spec.name!r}: cannot load {spec.path}: {exc}") from exc
        pipe.to(device)
        pipe.set_progress_bar_config(disable=True)
        if device.startswith("cuda"):
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        apply_speed_options(pipe, spec)
        try:
            version = self.registry.version(spec.name)
        except ModelRegistryError as exc:
            raise BackendUnavailable(str(exc)) from exc
        return LoadedModel(spec=spec, pipe=pipe, version=version, device=device, dtype_name=dtype_name)

    # -- inference (worker thread) ---------------------------------------------------------

    def _run(self, loaded: LoadedModel, items: list[GenerationItem]) -> list[GeneratedImage]:
        import torch

        spec = loaded.spec
        first = items[0].params
        sampler = first.sampler or spec.scheduler
        with self._run_lock:
            scheduler = scheduler_for(loaded, sampler)
            loaded.pipe.scheduler = scheduler
            call_kwargs, placements = _call_kwargs(loaded, items)
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
                if _truthy(_option(item.params, spec, "paste_back", "false")):
                    # The pipeline's VAE round trip blurs the product; its exact pixels go back.
                    image = Image.composite(placement.canvas, image.convert("RGB"), placement.mask)
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


# -- helpers -------------------------------------------------------------------------------


def apply_speed_options(pipe: Any, spec: ModelSpec) -> None:
    """Apply ModelSpec.options speed switches; each is skipped where the pipeline lacks it."""
    import torch

    denoiser = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
    vae = getattr(pipe, "vae", None)
    if denoiser is not None and hasattr(denoiser, "set_attn_processor"):
        from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

        # Flash/memory-efficient SDPA kernels; the classic processor is kept for debugging.
        use_sdpa = spec.flag("sdpa", default=hasattr(torch.nn.functional, "scaled_dot_product_attention"))
        processor = AttnProcessor2_0() if use_sdpa else AttnProcessor()
        for module in (denoiser, vae):
            if module is not None and hasattr(module, "set_attn_processor"):
                module.set_attn_processor(processor)
    if spec.flag("fuse_qkv") and hasattr(pipe, "fuse_qkv_projections"):
        # One matmul for Q, K and V instead of three: fewer, larger kernels.
        pipe.fuse_qkv_projections()
    if spec.flag("channels_last"):
        # Convolutions on tensor cores prefer NHWC.
        for module in (denoiser, vae):
            if module is not None:
                module.to(memory_format=torch.channels_last)
    if vae is not None and spec.flag("vae_slicing"):
        vae.enable_slicing()  # decode a big batch one image at a time: lower peak memory
    compile_mode = spec.option("compile", "false").strip().lower()
    if compile_mode not in ("", "false", "0", "no", "off") and denoiser is not None:
        mode = None if compile_mode in ("true", "1", "yes", "on") else compile_mode
        # Each new batch shape compiles once; the worker's batch sizes are few and fixed.
        compiled = torch.compile(denoiser, mode=mode, fullgraph=False)
        if getattr(pipe, "unet", None) is not None:
            pipe.unet = compiled
        else:
            pipe.transformer = compiled


def _dtype_kwarg() -> str:
    # diffusers renamed torch_dtype to dtype (deprecating the old name); older releases only
    # know torch_dtype.
    from diffusers.utils import deprecation_utils

    return "dtype" if hasattr(deprecation_utils, "_TORCH_DTYPE_DEPRECATION_MESSAGE") else "torch_dtype"


def _quiet_progress_bars() -> None:
    # Worker logs are structured lines; tqdm bars from loading would interleave with them.
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


def scheduler_for(loaded: LoadedModel, sampler: str) -> Any:
    cached = loaded.schedulers.get(sampler)
    if cached is not None:
        return cached
    import diffusers

    class_name = SCHEDULERS.get(sampler)
    if class_name is None:
        raise ValueError(f"unknown sampler {sampler!r}; known: {sorted(SCHEDULERS)}")
    base_config = loaded.pipe.scheduler.config
    scheduler = getattr(diffusers, class_name).from_config(base_config)
    loaded.schedulers[sampler] = scheduler
    return scheduler


def _option(params: GenerationParams, spec: ModelSpec, name: str, default: str) -> str:
    # The request's option wins over the model's default.
    return params.option(name, spec.option(name, default))


def _strength(params: GenerationParams, spec: ModelSpec) -> str:
    return _option(params, spec, "strength", _DEFAULT_STRENGTH.get(spec.kind, ""))


def _truthy(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _generators(device: str, items: list[GenerationItem], spec: ModelSpec) -> list[torch.Generator]:
    import torch

    # One generator per item: its initial noise (and any ancestral noise) comes from its own
    # seed, so batch composition never changes an image.
    gen_device = spec.option("generator_device", device)
    return [torch.Generator(gen_device).manual_seed(int(i.params.seed)) for i in items]


def _call_kwargs(
    loaded: LoadedModel, items: list[GenerationItem]
) -> tuple[dict[str, Any], list[PlacedProduct | None]]:
    spec = loaded.spec
    p = items[0].params
    kwargs: dict[str, Any] = {
        "prompt": [i.params.prompt for i in items],
        "negative_prompt": [i.params.negative_prompt for i in items],
        "width": p.width,
        "height": p.height,
        "num_inference_steps": p.steps,
        "guidance_scale": p.guidance,
        "generator": _generators(loaded.device, items, spec),
    }
    placements: list[PlacedProduct | None] = [None] * len(items)
    if spec.kind in ("inpainting", "image-to-image"):
        placed = [_place_for(item, spec) for item in items]
        placements = list(placed)
        kwargs["image"] = [pp.canvas for pp in placed]
        kwargs["strength"] = float(_strength(p, spec))
        if spec.kind == "inpainting":
            # White = repaint: everything except the product.
            kwargs["mask_image"] = [ImageOps.invert(pp.mask) for pp in placed]
    return kwargs, placements


def _place_for(item: GenerationItem, spec: ModelSpec) -> PlacedProduct:
    if item.product is None:
        raise ValueError(f"{item.request_id}: a {spec.kind} model needs the product image")
    fill = float(_option(item.params, spec, "fill", str(DEFAULT_FILL)))
    p = item.params
    # img2img keeps the layout of its init image, so it starts from the compositor's scene;
    # inpainting regenerates everything around the product, so a flat canvas is enough.
    scene = item.scene if spec.kind == "image-to-image" else None
    return place_product(item.product, item.mask, p.width, p.height, fill=fill, scene=scene, seed=p.seed)


@dataclass(frozen=True)
class PlacedProduct:
    canvas: Image.Image  # RGB: the product on the background
    mask: Image.Image  # L: 255 where the canvas shows the product
    placement: Placement


def product_mask(product: Image.Image, mask: Image.Image | None) -> Image.Image:
    """The given mask, else the product's cut-out alpha, else a segmentation (as the compositor)."""
    if mask is None:
        return compute_mask(product)
    mask = mask.convert("L")
    return mask if mask.size == product.size else mask.resize(product.size, Image.Resampling.BILINEAR)


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
    full_mask = product_mask(product, mask)
    bbox = full_mask.point(lambda v: 255 if v > _BBOX_THRESHOLD else 0).getbbox()
    if bbox is None:
        raise ValueError("product mask is empty")
    # RGBA so resizing is premultiplied: hidden colours under the mask do not bleed into edges.
    cut = product.convert("RGB").crop(bbox)
    cut.putalpha(full_mask.crop(bbox))
    placement = _placement(cut.size, width, height, fill)
    if cut.size != (placement.width, placement.height):
        cut = cut.resize((placement.width, placement.height), Image.Resampling.LANCZOS)
    if scene is None:
        canvas = Image.new("RGB", (width, height), CANVAS_BACKGROUND)
    else:
        rng = np.random.default_rng(np.random.SeedSequence(seed % 2**64))
        drawn = resolve_scene(scene).draw(width, height, rng)
        canvas = Image.fromarray(np.clip(np.round(drawn), 0, 255).astype(np.uint8), mode="RGB")
    offset = (placement.x, placement.y)
    canvas.paste(cut, offset, cut)
    placed = Image.new("L", (width, height), 0)
    placed.paste(cut.getchannel("A"), offset)
    return PlacedProduct(canvas, placed, placement)


def _placement(size: tuple[int, int], width: int, height: int, fill: float) -> Placement:
    # The compositor's framing rule, so every backend puts the product in the same place.
    if not 0.0 < fill <= 1.0:
        raise ValueError(f"fill must be in (0, 1], got {fill}")
    return place(size, width, height, fill)
