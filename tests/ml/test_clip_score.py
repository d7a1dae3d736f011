"""ClipScorer on a tiny random-weight open_clip model, loaded from a local checkpoint file."""

from __future__ import annotations

import json
import math
from pathlib import Path

import open_clip  # noqa: F401
import pytest

# The ml extra installs these (scripts/bootstrap.sh): missing is a broken setup, so a failure.
import torch  # noqa: F401
from PIL import Image, ImageDraw

from processors.imaging.clip_score import ClipScorer, ClipScorerError
from tests.support.ml_segmenter import TINY_CLIP_CONFIG, build_tiny_clip

pytestmark = pytest.mark.ml


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    return build_tiny_clip(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="module")
def scorer(tiny: tuple[str, Path]) -> ClipScorer:
    name, checkpoint = tiny
    return ClipScorer.from_local(name, checkpoint)


def _image(colour: str, size: tuple[int, int] = (48, 40)) -> Image.Image:
    image = Image.new("RGB", size, "white")
    ImageDraw.Draw(image).ellipse((8, 6, 40, 34), fill=colour)
    return image


def test_loads_from_local_checkpoint(scorer: ClipScorer, tiny: tuple[str, Path]) -> None:
    assert scorer.model_name == tiny[0]
    assert scorer.checkpoint_path == tiny[1].resolve()


def test_scores_are_finite_cosines(scorer: ClipScorer) -> None:
    for image, text in [
        (_image("red"), "a red handbag on a white background"),
        (_image("navy").convert("RGBA"), "running shoes"),
        (_image("green", (64, 64)).convert("L"), ""),
    ]:
        score = scorer.score(image, text)
        assert isinstance(score, float)
        assert math.isfinite(score)
        assert -1.0 <= score <= 1.0


def test_same_input_same_score(scorer: ClipScorer, tiny: tuple[str, Path]) -> None:
    image, text = _image("red"), "a red handbag"
    first = scorer.score(image, text)
    assert scorer.score(image, text) == first
    # A second load gives the same score: the weights come from the file, not a random init.
    again = ClipScorer.from_local(*tiny)
    assert again.score(image, text) == pytest.approx(first, abs=1e-6)


def test_weights_come_from_the_checkpoint(tmp_path: Path, scorer: ClipScorer) -> None:
    name, other = build_tiny_clip(tmp_path, seed=1)
    image, text = _image("red"), "a red handbag"
    assert ClipScorer.from_local(name, other).score(image, text) != pytest.approx(
        scorer.score(image, text), abs=1e-6
    )


def test_batch_matches_single_scores(scorer: ClipScorer) -> None:
    images = [_image(c) for c in ("red", "blue", "yellow")]
    texts = ["red", "a blue mug", "yellow sneakers on a beach"]
    batch = ClipScorer(**{**scorer.__dict__, "batch_size": 2}).score_batch(images, texts)
    assert batch == pytest.approx([scorer.score(i, t) for i, t in zip(images, texts, strict=True)], abs=1e-5)
    assert scorer.score_batch([], []) == []
    with pytest.raises(ValueError, match="pairwise"):
        scorer.score_batch(images, texts[:2])


def test_missing_checkpoint_is_a_clear_error(tmp_path: Path, tiny: tuple[str, Path]) -> None:
    missing = tmp_path / "clip" / "missing.safetensors"
    with pytest.raises(ClipScorerError, match="not found") as info:
        ClipScorer.from_local(tiny[0], missing)
    assert str(missing) in str(info.value)


def test_unknown_architecture_is_a_clear_error(tiny: tuple[str, Path]) -> None:
    with pytest.raises(ClipScorerError, match="unknown open_clip model 'no-such-clip'"):
        ClipScorer.from_local("no-such-clip", tiny[1])
    with pytest.raises(ClipScorerError, match="unknown open_clip model"):
        ClipScorer.from_local("hf-hub:someone/some-clip", tiny[1])


def test_unloadable_checkpoints_are_clear_errors(tmp_path: Path, tiny: tuple[str, Path]) -> None:
    name, checkpoint = tiny
    # The same tiny architecture with another embedding size: the weights do not fit.
    wide = tmp_path / "lightbox-tiny-clip-wide.json"
    wide.write_text(json.dumps({**TINY_CLIP_CONFIG, "embed_dim": 24}))
    with pytest.raises(ClipScorerError, match="cannot load CLIP checkpoint") as info:
        ClipScorer.from_local("lightbox-tiny-clip-wide", checkpoint, config_path=wide)
    assert str(checkpoint.resolve()) in str(info.value)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(ClipScorerError, match="cannot load CLIP checkpoint") as info:
        ClipScorer.from_local(name, corrupt)
    assert str(corrupt.resolve()) in str(info.value)


def test_config_path_registers_a_custom_architecture(tmp_path: Path, tiny: tuple[str, Path]) -> None:
    name, checkpoint = tiny
    scorer = ClipScorer.from_local(name, checkpoint, config_path=checkpoint.parent / f"{name}.json")
    assert math.isfinite(scorer.score(_image("red"), "red"))
    with pytest.raises(ClipScorerError, match="config not found"):
        ClipScorer.from_local(name, checkpoint, config_path=tmp_path / "nope.json")
