"""One batched pipeline call: prompts, size, steps, guidance, a seeded generator per item, and
the sampler (a diffusers scheduler built from the model's own config).

Each item gets its own ``torch.Generator`` seeded with its own seed, so an item's image depends
only on its seed and parameters, never on what it was batched with, and any image can be
regenerated from its lineage.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gpu_workers.backends.base import GenerationItem
from gpu_workers.backends.diffusers_backend.loading import LoadedModel
from gpu_workers.registry import ModelSpec

if TYPE_CHECKING:
    import torch

# Sampler names in requests -> diffusers scheduler classes (built from the model's own config).
SCHEDULERS: dict[str, str] = {
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "ddim": "DDIMScheduler",
    "dpm": "DPMSolverMultistepScheduler",
    "dpmpp_2m": "DPMSolverMultistepScheduler",
    "dpm++": "DPMSolverMultistepScheduler",
}


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


def prompt_kwargs(loaded: LoadedModel, items: list[GenerationItem]) -> dict[str, Any]:
    """The pipeline call's arguments every kind shares (items are batch-compatible)."""
    p = items[0].params
    return {
        "prompt": [i.params.prompt for i in items],
        "negative_prompt": [i.params.negative_prompt for i in items],
        "width": p.width,
        "height": p.height,
        "num_inference_steps": p.steps,
        "guidance_scale": p.guidance,
        "generator": _generators(loaded.device, items, loaded.spec),
    }


def _generators(device: str, items: list[GenerationItem], spec: ModelSpec) -> list[torch.Generator]:
    import torch

    # One generator per item: its initial noise (and any ancestral noise) comes from its own
    # seed, so batch composition never changes an image.
    gen_device = spec.option("generator_device", device)
    return [torch.Generator(gen_device).manual_seed(int(i.params.seed)) for i in items]
