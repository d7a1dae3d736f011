"""Speed switches a model's registry entry may turn on (ModelSpec.options): attention kernels,
fused QKV projections, channels-last memory, VAE slicing, torch.compile."""

from __future__ import annotations

from typing import Any

from gpu_workers.registry import FALSE_WORDS, TRUE_WORDS, ModelSpec


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
    # "compile" is a flag or a torch.compile mode name ("max-autotune", ...).
    compile_mode = spec.option("compile", "false").strip().lower()
    if compile_mode not in FALSE_WORDS and denoiser is not None:
        mode = None if compile_mode in TRUE_WORDS else compile_mode
        # Each new batch shape compiles once; the worker's batch sizes are few and fixed.
        compiled = torch.compile(denoiser, mode=mode, fullgraph=False)
        if getattr(pipe, "unet", None) is not None:
            pipe.unet = compiled
        else:
            pipe.transformer = compiled
