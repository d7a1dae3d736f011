"""Tiny random-weight Stable Diffusion pipelines for tests and benchmarks, built locally.

Nothing comes from a model hub: the components are constructed from configs (the same shapes the
diffusers test suite uses for its dummy components), the CLIP tokenizer from a byte-level vocabulary
written here, and the whole pipeline is saved with ``save_pretrained`` so tests load it back through
the registry and DiffusersBackend exactly as production loads real weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

TINY_SIZE = 32  # pixels; the tiny VAE downsamples by 2, so latents are 16x16

# Standard SD1.5 component configs (as published in the model's config files), written out so a
# full-size, random-weight pipeline can be built without downloading anything.
SD15_UNET: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280, 1280),
    "down_block_types": (
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
    "norm_num_groups": 32,
}
SD15_VAE: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "block_out_channels": (128, 256, 512, 512),
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "sample_size": 512,
    "scaling_factor": 0.18215,
}
SD15_TEXT: dict[str, Any] = {
    "vocab_size": 49408,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "projection_dim": 768,
}

TINY_UNET: dict[str, Any] = {
    "sample_size": 16,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 1,
    "block_out_channels": (32, 64),
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
    "cross_attention_dim": 32,
    "attention_head_dim": 8,
    "norm_num_groups": 32,
}
TINY_VAE: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 1,
    "block_out_channels": (32, 64),
    "down_block_types": ("DownEncoderBlock2D",) * 2,
    "up_block_types": ("UpDecoderBlock2D",) * 2,
    "sample_size": TINY_SIZE,
    "norm_num_groups": 32,
}
TINY_TEXT: dict[str, Any] = {
    "vocab_size": 1000,
    "hidden_size": 32,
    "intermediate_size": 37,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 77,
    "layer_norm_eps": 1e-5,
}

SCHEDULER: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "prediction_type": "epsilon",
}


def _bytes_to_unicode() -> dict[int, str]:
    # GPT-2/CLIP byte-level BPE alphabet: every byte maps to a printable unicode character.
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in codes), strict=True))


def tiny_clip_vocab() -> tuple[dict[str, int], list[str]]:
    """A valid CLIP BPE vocabulary of single bytes (plus end-of-word forms), with no merges.

    Every string tokenizes (one token per byte), which is all random weights need.
    """
    chars = list(_bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    return vocab, ["#version: 0.2"]


def build_tokenizer(max_length: int = 77) -> Any:
    from transformers import CLIPTokenizer

    vocab, merges = tiny_clip_vocab()
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges[1:])
    tokenizer.model_max_length = max_length
    return tokenizer


def build_sd_components(
    kind: str = "text-to-image", *, full_size: bool = False, seed: int = 0
) -> dict[str, Any]:
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = build_tokenizer()
    unet_cfg = dict(SD15_UNET if full_size else TINY_UNET)
    if kind == "inpainting":
        unet_cfg["in_channels"] = 9  # latents + masked-image latents + mask
    text_cfg = dict(SD15_TEXT if full_size else TINY_TEXT)
    text_cfg.update(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**unet_cfg)
    torch.manual_seed(seed)
    vae = AutoencoderKL(**(SD15_VAE if full_size else TINY_VAE))
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(CLIPTextConfig(**text_cfg))
    return {
        "unet": unet,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "scheduler": DDIMScheduler(**SCHEDULER),
        "safety_checker": None,
        "feature_extractor": None,
        "requires_safety_checker": False,
    }


def build_tiny_sd_pipeline(
    out_dir: Path,
    kind: str = "text-to-image",
    *,
    full_size: bool = False,
    save_dtype: str = "float32",
) -> Path:
    """Build, save and return the directory of a random-weight SD pipeline of the given kind.

    ``full_size`` builds the SD1.5 architecture (~1.07B parameters) instead of the tiny one.
    """
    import torch
    from diffusers import StableDiffusionInpaintPipeline, StableDiffusionPipeline

    if kind not in ("text-to-image", "inpainting"):
        raise ValueError(f"unsupported kind {kind!r}")
    components = build_sd_components(kind, full_size=full_size)
    cls = StableDiffusionInpaintPipeline if kind == "inpainting" else StableDiffusionPipeline
    pipe = cls(**components)
    if save_dtype != "float32":
        pipe.to(dtype=getattr(torch, save_dtype))  # halves the bytes written for full-size runs
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def tiny_registry_dict(paths: dict[str, Path], **overrides: Any) -> dict[str, Any]:
    """A registry mapping with one tiny diffusers model per (name -> saved pipeline path)."""
    models: dict[str, Any] = {}
    for name, path in paths.items():
        spec: dict[str, Any] = {
            "backend": "diffusers",
            "path": str(path),
            "kind": "inpainting" if "inpaint" in name else "text-to-image",
            "dtype": "float32",
            "scheduler": "euler",
            "steps": 2,
            "guidance": 5.0,
            "width": TINY_SIZE,
            "height": TINY_SIZE,
            "pool": "cpu",
        }
        spec.update(overrides)
        models[name] = spec
    return {"models": models}
