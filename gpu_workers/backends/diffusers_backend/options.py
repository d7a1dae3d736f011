"""A request's diffusers options: the request's value wins over the model's registry default."""

from __future__ import annotations

from gpu_workers.backends.base import GenerationParams
from gpu_workers.registry import ModelSpec, is_true

# Denoising strength per pipeline kind when neither request nor model names one.
DEFAULT_STRENGTH = {"text-to-image": "", "inpainting": "1.0", "image-to-image": "0.75"}


def option(params: GenerationParams, spec: ModelSpec, name: str, default: str) -> str:
    return params.option(name, spec.option(name, default))


def strength(params: GenerationParams, spec: ModelSpec) -> str:
    return option(params, spec, "strength", DEFAULT_STRENGTH.get(spec.kind, ""))


def paste_back(params: GenerationParams, spec: ModelSpec) -> bool:
    return is_true(option(params, spec, "paste_back", "false"))
