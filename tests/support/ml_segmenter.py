"""Tiny random-weight segmentation and CLIP models for tests, built locally from configs.

Nothing comes from a model hub: the models are constructed from small configs, saved the way real
weights are shipped (a ``save_pretrained`` folder; an open_clip state-dict file) and loaded back
by the tests through ``ModelSegmenter.from_path`` and ``ClipScorer.from_local``.
"""

from __future__ import annotations

import json
from pathlib import Path

TINY_SEGMENTER_LABELS = {0: "background", 1: "product"}
# Two encoder stages of 8 and 16 channels: a few thousand parameters, milliseconds on a CPU.
TINY_SEGFORMER = {
    "num_channels": 3,
    "num_encoder_blocks": 2,
    "depths": [1, 1],
    "sr_ratios": [2, 1],
    "hidden_sizes": [8, 16],
    "patch_sizes": [7, 3],
    "strides": [4, 2],
    "num_attention_heads": [1, 1],
    "mlp_ratios": [2, 2],
    "decoder_hidden_size": 16,
}
TINY_SEGMENTER_INPUT = 64  # px, the processor's resize target

TINY_CLIP_NAME = "lightbox-tiny-clip"
# vocab_size and context_length are CLIP's, so the BPE tokenizer bundled with open_clip works.
TINY_CLIP_CONFIG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def build_tiny_segmenter(out_dir: Path, *, favour_label: int | None = None, seed: int = 0) -> Path:
    """Save a tiny Segformer (2 labels) and its image processor config under ``out_dir``.

    ``favour_label`` zeroes the classifier weights and biases it towards that label, so every
    pixel predicts it whatever the input: a deterministic way to get an empty or full mask.
    """
    import torch
    from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessor

    config = SegformerConfig(
        **TINY_SEGFORMER,
        num_labels=len(TINY_SEGMENTER_LABELS),
        id2label=TINY_SEGMENTER_LABELS,
        label2id={name: i for i, name in TINY_SEGMENTER_LABELS.items()},
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = SegformerForSemanticSegmentation(config)
    if favour_label is not None:
        classifier = model.decode_head.classifier
        with torch.no_grad():
            classifier.weight.zero_()
            classifier.bias.fill_(-10.0)
            classifier.bias[favour_label] = 10.0
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    SegformerImageProcessor(
        size={"height": TINY_SEGMENTER_INPUT, "width": TINY_SEGMENTER_INPUT}
    ).save_pretrained(out_dir)
    return out_dir


def build_tiny_clip(out_dir: Path, *, seed: int = 0) -> tuple[str, Path]:
    """Register a tiny open_clip architecture and save random weights; (model name, checkpoint).

    The config file is registered with open_clip (a process-wide registry, hence the unique name)
    and also left at ``out_dir / f"{TINY_CLIP_NAME}.json"`` for ``ClipScorer.from_local(config_path=)``.
    """
    import open_clip
    import torch

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config_path = out_dir / f"{TINY_CLIP_NAME}.json"
    config_path.write_text(json.dumps(TINY_CLIP_CONFIG, indent=2))
    open_clip.add_model_config(config_path)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = open_clip.create_model(TINY_CLIP_NAME)
    checkpoint = out_dir / f"{TINY_CLIP_NAME}-seed{seed}.pt"
    torch.save(model.state_dict(), checkpoint)
    return TINY_CLIP_NAME, checkpoint
