"""Loading a diffusers pipeline from a local path: device, dtype, pipeline class, quiet logs.

torch and diffusers are imported inside the functions, so importing this module costs nothing on
machines without the ml extra.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from gpu_workers.backends.base import BackendUnavailable
from gpu_workers.backends.diffusers_backend.speed import apply_speed_options
from gpu_workers.registry import ModelSpec

PIPELINES = {
    "text-to-image": "AutoPipelineForText2Image",
    "inpainting": "AutoPipelineForInpainting",
    "image-to-image": "AutoPipelineForImage2Image",
}


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


def load_pipeline(spec: ModelSpec, device: str, version: str) -> LoadedModel:
    """The spec's pipeline on ``device``, speed options applied; BackendUnavailable if it will not load."""
    import diffusers
    import torch

    assert spec.path is not None  # problems() guarantees it for diffusers models
    # Half precision on CPU is slow or unsupported; CPU always runs float32.
    dtype_name = "float32" if device == "cpu" else spec.dtype
    dtype = getattr(torch, dtype_name)
    kwargs: dict[str, Any] = {_dtype_kwarg(): dtype, "local_files_only": True}
    index = json.loads((spec.path / "model_index.json").read_text())
    if "safety_checker" in index:
        # Output screening is the quality stage's job; SD's checker would black out images.
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    pipeline_cls = getattr(diffusers, PIPELINES[spec.kind])
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
    return LoadedModel(spec=spec, pipe=pipe, version=version, device=device, dtype_name=dtype_name)


def release(device: str) -> None:
    """After a model is dropped: give its cached accelerator memory back."""
    import gc

    gc.collect()
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


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
