"""ModelSegmenter on tiny random-weight Segformers, loaded from local folders like real models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

# The ml extra installs these (scripts/bootstrap.sh): missing is a broken setup, so a failure.
import torch  # noqa: F401
import transformers  # noqa: F401
from PIL import Image, ImageDraw

from processors.imaging.masks import compute_mask
from processors.imaging.segmenter import (
    ModelSegmenter,
    SegmenterError,
    compute_product_mask,
    segment_product,
)
from tests.support.ml_segmenter import build_tiny_segmenter

pytestmark = pytest.mark.ml

SIZE = (64, 48)  # non-square, so a swapped width/height would show


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("segmenters")
    return {
        "random": build_tiny_segmenter(root / "random"),
        "background": build_tiny_segmenter(root / "background", favour_label=0),
        "product": build_tiny_segmenter(root / "product", favour_label=1),
    }


@pytest.fixture
def product_shot() -> Image.Image:
    """A dark product on a white studio backdrop: the classical mask finds it."""
    image = Image.new("RGB", SIZE, "white")
    ImageDraw.Draw(image).rectangle((20, 12, 44, 36), fill=(40, 60, 160))
    return image


class _FixedSegmenter:
    def __init__(self, mask: Image.Image) -> None:
        self._mask = mask

    def mask(self, image: Image.Image) -> Image.Image:
        return self._mask


def _values(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.uint8)


def test_loads_from_path_and_masks_at_image_size(models: dict[str, Path], product_shot: Image.Image) -> None:
    segmenter = ModelSegmenter.from_path(str(models["random"]))
    assert segmenter.path == models["random"]
    assert segmenter.foreground_labels == frozenset({1})
    for image in (product_shot, product_shot.convert("RGBA"), product_shot.convert("L")):
        mask = segmenter.mask(image)
        assert mask.mode == "L"
        assert mask.size == SIZE
        assert set(np.unique(_values(mask))) <= {0, 255}


def test_argmax_label_decides_foreground(models: dict[str, Path], product_shot: Image.Image) -> None:
    background = ModelSegmenter.from_path(models["background"]).mask(product_shot)
    product = ModelSegmenter.from_path(models["product"]).mask(product_shot)
    assert _values(background).max() == 0
    assert _values(product).min() == 255


def test_foreground_labels_by_name_or_id(models: dict[str, Path], product_shot: Image.Image) -> None:
    by_name = ModelSegmenter.from_path(models["product"], foreground_labels=["Product"])
    assert by_name.foreground_labels == frozenset({1})
    # Background as foreground inverts the mask of a model that predicts product everywhere.
    inverted = ModelSegmenter.from_path(models["product"], foreground_labels=[0])
    assert _values(inverted.mask(product_shot)).max() == 0


@pytest.mark.parametrize("labels", [["shoe"], [2], []])
def test_bad_foreground_labels_are_clear_errors(models: dict[str, Path], labels: list[int | str]) -> None:
    with pytest.raises(SegmenterError, match=str(models["random"])):
        ModelSegmenter.from_path(models["random"], foreground_labels=labels)


def test_missing_path_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(SegmenterError, match="not found") as info:
        ModelSegmenter.from_path(missing)
    assert str(missing) in str(info.value)


def test_folder_without_a_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SegmenterError) as info:
        ModelSegmenter.from_path(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_without_segmenter_uses_classical_mask(product_shot: Image.Image) -> None:
    result = segment_product(product_shot, None)
    assert result.source == "classical"
    assert _values(result.image).tolist() == _values(compute_mask(product_shot)).tolist()


def test_plausible_model_mask_is_used(product_shot: Image.Image) -> None:
    model_mask = Image.new("L", SIZE, 0)
    ImageDraw.Draw(model_mask).rectangle((0, 0, 15, 15), fill=255)
    result = segment_product(product_shot, _FixedSegmenter(model_mask))
    assert result.source == "model"
    assert compute_product_mask(product_shot, _FixedSegmenter(model_mask)) is model_mask


@pytest.mark.parametrize("model", ["background", "product"])
def test_degenerate_model_mask_falls_back_to_classical(
    models: dict[str, Path], product_shot: Image.Image, model: str
) -> None:
    segmenter = ModelSegmenter.from_path(models[model])
    result = segment_product(product_shot, segmenter)
    assert result.source == "classical_fallback"
    assert result.model_coverage in (0.0, 1.0)
    classical = _values(compute_mask(product_shot))
    assert _values(compute_product_mask(product_shot, segmenter)).tolist() == classical.tolist()
    # The classical mask really found the product, i.e. neither empty nor the whole frame.
    assert 0 < classical.mean() < 255


def test_cutout_alpha_beats_the_model(models: dict[str, Path]) -> None:
    cutout = Image.new("RGBA", SIZE, (0, 0, 0, 0))
    ImageDraw.Draw(cutout).ellipse((10, 8, 50, 40), fill=(200, 30, 30, 255))
    result = segment_product(cutout, ModelSegmenter.from_path(models["product"]))
    assert result.source == "alpha"
    assert _values(result.image).tolist() == _values(cutout.getchannel("A")).tolist()
