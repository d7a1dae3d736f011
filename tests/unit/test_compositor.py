from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from gpu_workers.backends.base import Backend, GenerationItem, GenerationParams
from gpu_workers.backends.compositor import (
    MODEL_VERSION,
    SCENES,
    CompositorBackend,
    composite,
    composite_with_placement,
)
from gpu_workers.backends.compositor.scenes import keyed_by_scene_names
from processors.imaging.checks import product_preservation
from processors.prompting.scenes import SCENE_NAMES


def _textured_cutout(size: int = 100, inner: int = 70) -> Image.Image:
    """RGBA: a noisy, multi-coloured square (every pixel distinct) on full transparency."""
    rng = np.random.default_rng(7)
    pixels = np.zeros((size, size, 4), dtype=np.uint8)
    start = (size - inner) // 2
    pixels[start : start + inner, start : start + inner, :3] = rng.integers(
        0, 256, (inner, inner, 3), dtype=np.uint8
    )
    pixels[start : start + inner, start : start + inner, 3] = 255
    return Image.fromarray(pixels, mode="RGBA")


def _packshot() -> Image.Image:
    """A bottle-like product on a white backdrop, no alpha (the mask must be computed)."""
    image = Image.new("RGB", (120, 160), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    draw.rounded_rectangle((40, 40, 80, 150), radius=10, fill=(30, 60, 130))
    draw.rectangle((52, 15, 68, 42), fill=(40, 40, 46))
    draw.rectangle((40, 80, 80, 110), fill=(236, 200, 60))
    draw.line((44, 95, 76, 95), fill=(200, 20, 20), width=3)
    return image


def _params(width: int = 96, height: int = 96, seed: int = 1) -> GenerationParams:
    return GenerationParams(
        model="compositor",
        width=width,
        height=height,
        steps=0,
        guidance=0.0,
        sampler="none",
        seed=seed,
        prompt="a product",
    )


def test_deterministic_for_the_same_seed_and_different_across_seeds() -> None:
    product = _packshot()
    first = composite(product, None, 96, 80, "kitchen", seed=11)
    again = composite(product, None, 96, 80, "kitchen", seed=11)
    other = composite(product, None, 96, 80, "kitchen", seed=12)
    assert first.mode == "RGB" and first.size == (96, 80)
    assert first.tobytes() == again.tobytes()
    assert first.tobytes() != other.tobytes()


def test_product_pixels_are_pasted_unchanged_inside_the_mask() -> None:
    cutout = _textured_cutout()
    # A 70 px product filling 70% of a 100 px canvas is placed at scale 1: no resampling at all.
    image, placement = composite_with_placement(cutout, None, 100, 100, "outdoor", seed=3)
    assert (placement.width, placement.height) == (70, 70)
    region = np.asarray(image)[placement.y : placement.y + 70, placement.x : placement.x + 70]
    expected = np.asarray(cutout)[15:85, 15:85, :3]
    assert np.array_equal(region, expected)


def test_scaled_product_is_recognisable_in_the_output() -> None:
    product = _packshot()
    image = composite(product, None, 160, 128, "holiday", seed=5)
    assert product_preservation(image, product, None) > 0.8


def test_product_is_centred_slightly_low_and_fills_about_seventy_percent() -> None:
    _, placement = composite_with_placement(_packshot(), None, 200, 200, "studio", seed=0)
    assert max(placement.width, placement.height) == pytest.approx(140, abs=2)
    assert placement.x + placement.width / 2 == pytest.approx(100, abs=1)
    assert placement.y + placement.height / 2 > 100


def test_drop_shadow_darkens_the_floor_under_the_product() -> None:
    image, placement = composite_with_placement(_textured_cutout(), None, 200, 200, "studio", 0)
    pixels = np.asarray(image, dtype=np.float32).mean(axis=-1)
    below = placement.y + placement.height + 2
    under = pixels[below, placement.x + placement.width // 2]
    beside = pixels[below, 3]
    assert under < beside - 10


@pytest.mark.parametrize("scene", sorted(SCENES))
def test_every_scene_renders_distinctly(scene: str) -> None:
    product = _packshot()
    image = composite(product, None, 64, 64, scene, seed=2)
    others = [composite(product, None, 64, 64, s, seed=2) for s in SCENES if s != scene]
    assert all(image.tobytes() != other.tobytes() for other in others)


def test_unknown_scene_falls_back_to_studio() -> None:
    product = _packshot()
    assert (
        composite(product, None, 48, 48, "moon base", 4).tobytes()
        == composite(product, None, 48, 48, "studio", 4).tobytes()
    )


def test_explicit_mask_is_respected() -> None:
    cutout = _textured_cutout()
    mask = Image.new("L", cutout.size, 0)
    mask.paste(255, (15, 15, 50, 85))  # only the left half of the square is product
    _, placement = composite_with_placement(cutout.convert("RGB"), mask, 100, 100, "studio", 0)
    assert placement.width < placement.height


async def test_backend_generates_one_image_per_item_in_order() -> None:
    backend = CompositorBackend()
    assert isinstance(backend, Backend)
    items = [
        GenerationItem("job-a#0", _params(seed=1), product=_packshot(), scene="kitchen"),
        GenerationItem("job-b#0", _params(seed=2), product=_textured_cutout(), scene="nope"),
    ]
    assert backend.batch_key(items[0]) == (96, 96)
    results = await backend.generate(items)
    assert [r.request_id for r in results] == ["job-a#0", "job-b#0"]
    assert all(r.model_version == MODEL_VERSION == "compositor-1.0.0" for r in results)
    assert all(r.image.size == (96, 96) and r.image.mode == "RGB" for r in results)
    assert results[0].extra["scene"] == "kitchen" and results[1].extra["scene"] == "studio"
    assert len(results[0].extra["placement"].split(",")) == 4
    assert await backend.healthy()


async def test_backend_refuses_items_without_a_product() -> None:
    with pytest.raises(ValueError, match="job-x#0"):
        await CompositorBackend().generate([GenerationItem("job-x#0", _params())])


def test_old_backdrop_colour_does_not_leak_into_the_edge() -> None:
    """The same product shot on white and on black composites to (nearly) the same image."""
    big = Image.new("L", (480, 480), 0)
    ImageDraw.Draw(big).ellipse((60, 90, 420, 400), fill=255)
    coverage = big.resize((120, 120), Image.Resampling.LANCZOS)  # antialiased edge
    colour = Image.new("RGB", coverage.size, (30, 90, 200))
    shots = []
    for backdrop in ((255, 255, 255), (0, 0, 0)):
        photo = Image.new("RGB", coverage.size, backdrop)
        photo.paste(colour, (0, 0), coverage)
        shots.append(np.asarray(composite(photo, coverage, 150, 150, "kitchen", 1), np.int16))
    assert np.abs(shots[0] - shots[1]).max() <= 12


def test_the_scene_table_is_exactly_the_scene_names() -> None:
    assert tuple(SCENES) == SCENE_NAMES
    assert all(SCENES[name].name == name for name in SCENE_NAMES)


def test_a_scene_name_without_a_drawing_or_a_drawing_without_a_name_is_refused() -> None:
    drawings = {name: (scene.draw, scene.shadow_rgb, scene.shadow_opacity) for name, scene in SCENES.items()}
    missing = dict(list(drawings.items())[1:])
    with pytest.raises(RuntimeError, match=f"no drawing for \\['{SCENE_NAMES[0]}'\\]"):
        keyed_by_scene_names(missing)
    with pytest.raises(RuntimeError, match="drawings not listed \\['moon'\\]"):
        keyed_by_scene_names({**drawings, "moon": drawings[SCENE_NAMES[0]]})
