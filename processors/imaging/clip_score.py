"""Prompt adherence: CLIP image-text cosine similarity with open_clip, from local files only.

``ClipScorer.from_local("ViT-B-32", "/models/clip/open_clip_model.safetensors")`` builds the
architecture from open_clip's bundled config and loads the weights from the file. open_clip treats
a ``pretrained`` value that is an existing file as a checkpoint path (only a known tag name would
download), and we pass an absolute path that was checked to exist, so nothing is fetched. Standard
CLIP models use the BPE tokenizer bundled in the open_clip package; models whose config names an
``hf_tokenizer_name`` need that tokenizer already in the local Hugging Face cache.

The raw score is a cosine in [-1, 1], not a probability: matching pairs typically score only
0.25-0.35 with ViT-B-32, and the scale differs per model, so the threshold (``min_clip_score``) is
configured per model after calibration, never defaulted.

torch and open_clip are imported lazily, so importing this module costs nothing on CPU stages.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

# Images and texts encoded per forward pass; bounds memory on large best-of-N batches.
DEFAULT_BATCH_SIZE = 16


class ClipScorerError(Exception):
    """A CLIP model that cannot be loaded (missing checkpoint, unknown architecture, bad weights)."""


@dataclass(frozen=True)
class ClipScorer:
    model: Any  # an open_clip CLIP module; typed loosely so torch stays a lazy import
    preprocess: Callable[[Image.Image], Any]
    tokenizer: Callable[[list[str]], Any]
    model_name: str
    checkpoint_path: Path
    device: str = "cpu"
    batch_size: int = DEFAULT_BATCH_SIZE

    @classmethod
    def from_local(
        cls,
        model_name: str,
        checkpoint_path: Path | str,
        device: str = "cpu",
        *,
        config_path: Path | str | None = None,
        precision: str = "fp32",
    ) -> ClipScorer:
        """Architecture ``model_name`` (an open_clip config name) with weights from a local file.

        ``config_path`` registers an extra open_clip model config (a JSON file or a folder of
        them, the file stem being the model name) for architectures open_clip does not bundle.
        """
        checkpoint = Path(checkpoint_path).expanduser().resolve()
        if not checkpoint.is_file():
            raise ClipScorerError(f"CLIP checkpoint not found: {checkpoint}")
        try:
            import open_clip
        except ImportError as exc:
            raise ClipScorerError(
                f"cannot load CLIP checkpoint {checkpoint}: open_clip is not installed "
                "(install the 'ml' extra)"
            ) from exc
        if config_path is not None:
            config = Path(config_path).expanduser()
            if not config.exists():
                raise ClipScorerError(f"open_clip model config not found: {config}")
            open_clip.add_model_config(config)
        # Only bundled or registered names: 'hf-hub:' names would download, and 'local-dir:' names
        # ignore the checkpoint argument, so neither fits "this architecture, these weights".
        if model_name not in open_clip.list_models():
            raise ClipScorerError(
                f"unknown open_clip model {model_name!r} (for checkpoint {checkpoint}); "
                "pass config_path to register a custom architecture"
            )
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                model_name, pretrained=str(checkpoint), device=device, precision=precision
            )
            tokenizer = open_clip.get_tokenizer(model_name)
        except Exception as exc:
            # Shape mismatches (RuntimeError), truncated or foreign files (UnpicklingError,
            # safetensors errors, OSError): the types vary by format, the fix does not. Naming the
            # checkpoint and the architecture is what makes any of them actionable.
            raise ClipScorerError(
                f"cannot load CLIP checkpoint {checkpoint} as {model_name!r}: {exc}"
            ) from exc
        model.eval()
        return cls(
            model=model,
            preprocess=preprocess,
            tokenizer=tokenizer,
            model_name=model_name,
            checkpoint_path=checkpoint,
            device=device,
        )

    def score(self, image: Image.Image, text: str) -> float:
        """Cosine similarity of the normalised image and text embeddings, in [-1, 1]."""
        return self.score_batch([image], [text])[0]

    def score_batch(self, images: Sequence[Image.Image], texts: Sequence[str]) -> list[float]:
        """Pairwise scores: ``images[i]`` against ``texts[i]``."""
        if len(images) != len(texts):
            raise ValueError(f"{len(images)} images but {len(texts)} texts: scores are pairwise")
        scores: list[float] = []
        for start in range(0, len(images), self.batch_size):
            stop = start + self.batch_size
            scores.extend(self._score_chunk(images[start:stop], texts[start:stop]))
        return scores

    def _score_chunk(self, images: Sequence[Image.Image], texts: Sequence[str]) -> list[float]:
        import torch

        pixels = torch.stack([self.preprocess(_rgb(image)) for image in images]).to(self.device)
        tokens = self.tokenizer(list(texts)).to(self.device)
        with torch.inference_mode():
            image_features = self.model.encode_image(pixels, normalize=True).float()
            text_features = self.model.encode_text(tokens, normalize=True).float()
            cosine = (image_features * text_features).sum(dim=-1)
        # Rounding can put a normalised dot product a hair outside [-1, 1]; a NaN (a degenerate
        # embedding) stays NaN so the threshold check fails it rather than passing it silently.
        return [v if math.isnan(v) else min(1.0, max(-1.0, v)) for v in cosine.cpu().tolist()]


def _rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA", "P") or "transparency" in image.info:
        # CLIP saw photos, not transparency: flatten onto white like a catalog backdrop rather
        # than onto the black that a bare convert("RGB") leaves behind transparent pixels.
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return image.convert("RGB")
