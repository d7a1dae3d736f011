"""DiffusersBackend on tiny random-weight pipelines, loaded through the registry like real models.

Runs on the CPU in seconds: 32x32 images, 3 steps.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

# torch, diffusers and transformers come with the ml extra (bootstrap installs it): a missing one
# is an import error here, never a skip.
import diffusers  # noqa: F401
import numpy as np
import pytest
import torch  # noqa: F401
import transformers  # noqa: F401
from PIL import Image, ImageDraw

from gpu_workers.backends.base import (
    BackendUnavailable,
    GeneratedImage,
    GenerationItem,
    GenerationParams,
)
from gpu_workers.backends.compositor import composite_with_placement
from gpu_workers.backends.diffusers_backend import DiffusersBackend, place_product
from gpu_workers.batching import group_compatible, run_with_split
from gpu_workers.registry import ModelRegistry, ModelRegistryError
from tests.support.ml_pipelines import TINY_SIZE, build_tiny_sd_pipeline, tiny_registry_dict

pytestmark = pytest.mark.ml

STEPS = 3


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> ModelRegistry:
    root = tmp_path_factory.mktemp("models")
    paths = {
        "tiny": build_tiny_sd_pipeline(root / "tiny"),
        "tiny-inpaint": build_tiny_sd_pipeline(root / "tiny-inpaint", kind="inpainting"),
    }
    data = tiny_registry_dict(paths)
    data["models"]["tiny-inpaint"]["options"] = {"paste_back": "true"}
    # The text-to-image weights also serve image-to-image (the product on a compositor scene).
    data["models"]["tiny-img2img"] = dict(
        data["models"]["tiny"], kind="image-to-image", options={"strength": "0.6"}
    )
    # Same weights with every CPU-safe speed switch on: must load and run.
    data["models"]["tiny-fast"] = dict(
        data["models"]["tiny"],
        options={"channels_last": "true", "fuse_qkv": "true", "sdpa": "true", "vae_slicing": "1"},
    )
    registry = ModelRegistry.from_dict(data)
    registry.validate()
    return registry


@pytest.fixture(scope="module")
def backend(registry: ModelRegistry) -> Iterator[DiffusersBackend]:
    backend = DiffusersBackend(registry, device="cpu", max_loaded=4)
    yield backend
    backend.close()


def _item(
    seed: int,
    prompt: str = "a red sneaker on white",
    model: str = "tiny",
    sampler: str = "euler",
    **kw: object,
) -> GenerationItem:
    params = GenerationParams(
        model=model,
        width=TINY_SIZE,
        height=TINY_SIZE,
        steps=STEPS,
        guidance=5.0,
        sampler=sampler,
        seed=seed,
        prompt=prompt,
        negative_prompt="blurry",
    )
    return GenerationItem(request_id=f"job-{seed}-{prompt}#0", params=params, **kw)  # type: ignore[arg-type]


def _pixels(result: GeneratedImage) -> np.ndarray:
    return np.asarray(result.image.convert("RGB"), dtype=np.int16)


async def test_same_seed_same_image_across_batches(
    backend: DiffusersBackend, registry: ModelRegistry
) -> None:
    target = _item(seed=1234)
    alone_a = await backend.generate([target])
    alone_b = await backend.generate([_item(seed=1234)])
    # Two separate calls with the same request: bit-identical.
    assert np.array_equal(_pixels(alone_a[0]), _pixels(alone_b[0]))

    mixed = await backend.generate([_item(seed=5, prompt="blue vase"), _item(seed=1234)])
    swapped = await backend.generate([_item(seed=1234), _item(seed=9, prompt="green mug")])
    reference = _pixels(alone_a[0])
    for other in (_pixels(mixed[1]), _pixels(swapped[0])):
        # Same noise and conditioning per item (own generator); only the CPU kernels' float
        # summation order changes with the batch's shape, which can move a rare pixel by one
        # 8-bit level. Anything beyond that would mean items leak into each other.
        diff = np.abs(other - reference)
        assert diff.max() <= 1, diff.max()
        assert (diff > 0).mean() < 0.01

    different = _pixels(mixed[0])
    assert np.abs(different - reference).mean() > 5  # different seed and prompt: other image

    result = alone_a[0]
    assert result.image.size == (TINY_SIZE, TINY_SIZE)
    assert result.model_version == registry.version("tiny")
    assert result.extra["batch_size"] == "1" and mixed[0].extra["batch_size"] == "2"
    assert result.extra["sampler"] == "euler" and result.extra["dtype"] == "float32"
    assert result.extra["scheduler"] == "EulerDiscreteScheduler"
    assert mixed[0].compute_ms == mixed[1].compute_ms > 0


async def test_different_seeds_differ_and_samplers_switch(backend: DiffusersBackend) -> None:
    a, b = await backend.generate([_item(seed=1), _item(seed=2)])
    assert np.abs(_pixels(a) - _pixels(b)).mean() > 5
    [ddim] = await backend.generate([_item(seed=1, sampler="ddim")])
    assert ddim.extra["scheduler"] == "DDIMScheduler"
    [again] = await backend.generate([_item(seed=1, sampler="ddim")])
    assert np.array_equal(_pixels(ddim), _pixels(again))


async def test_batch_key_separates_incompatible_items(backend: DiffusersBackend) -> None:
    items = [_item(1), _item(2, sampler="ddim"), _item(3), _item(4, model="tiny-inpaint")]
    groups = group_compatible(items, backend.batch_key, max_batch=8)
    assert [[i.params.seed for i in g] for g in groups] == [[1, 3], [2], [4]]
    with pytest.raises(ValueError, match="not batch-compatible"):
        await backend.generate(items[:2])


def _product() -> tuple[Image.Image, Image.Image]:
    product = Image.new("RGB", (40, 30), (200, 30, 30))
    ImageDraw.Draw(product).rectangle([12, 8, 28, 22], fill=(20, 200, 40))
    mask = Image.new("L", (40, 30), 0)
    ImageDraw.Draw(mask).ellipse([2, 2, 38, 28], fill=255)
    return product, mask


async def test_inpainting_paste_back_preserves_product_pixels(backend: DiffusersBackend) -> None:
    product, mask = _product()
    items = [
        _item(seed=s, model="tiny-inpaint", product=product, mask=mask, prompt="on a beach") for s in (1, 2)
    ]
    results = await backend.generate(items)
    placed = place_product(product, mask, TINY_SIZE, TINY_SIZE)
    inside = np.asarray(placed.mask) == 255
    assert 50 < inside.sum() < TINY_SIZE * TINY_SIZE / 2
    expected = np.asarray(placed.canvas, dtype=np.int16)
    for result in results:
        out = _pixels(result)
        assert np.array_equal(out[inside], expected[inside])  # the product, exactly
        assert np.abs(out[~inside] - expected[~inside]).mean() > 5  # the scene was generated
        assert result.extra["paste_back"] == "true" and result.extra["kind"] == "inpainting"
        assert result.extra["placement"] == placed.placement.as_text()

    # Without paste_back the VAE round trip alters the product: that is why the option exists.
    raw = items[0]
    raw = dataclasses.replace(raw, params=dataclasses.replace(raw.params, options=(("paste_back", "false"),)))
    [raw_result] = await backend.generate([raw])
    assert not np.array_equal(_pixels(raw_result)[inside], expected[inside])


def test_placement_matches_the_compositor() -> None:
    product, mask = _product()
    placed = place_product(product, mask, 96, 64, fill=0.5)
    _, expected = composite_with_placement(product, mask, 96, 64, "studio", seed=3, fill=0.5)
    assert placed.placement == expected


async def test_image_to_image_starts_from_the_scene(backend: DiffusersBackend) -> None:
    product, mask = _product()
    item = _item(seed=4, model="tiny-img2img", product=product, mask=mask)
    [result] = await backend.generate([item])
    assert result.image.size == (TINY_SIZE, TINY_SIZE) and result.extra["kind"] == "image-to-image"
    assert backend.batch_key(item)[-1] == "0.6"  # strength splits batches


async def test_inpainting_needs_a_product(backend: DiffusersBackend) -> None:
    with pytest.raises(ValueError, match="needs the product image"):
        await backend.generate([_item(seed=1, model="tiny-inpaint")])


async def test_speed_options_load_and_run(backend: DiffusersBackend) -> None:
    [result] = await backend.generate([_item(seed=1, model="tiny-fast")])
    assert result.image.size == (TINY_SIZE, TINY_SIZE)
    assert np.asarray(result.image).std() > 0


async def test_missing_model_path_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "sd15-not-here"
    registry = ModelRegistry.from_dict(tiny_registry_dict({"catalog-sd15": missing}))
    with pytest.raises(ModelRegistryError, match=f"model 'catalog-sd15': path {missing} does not"):
        registry.validate()
    backend = DiffusersBackend(registry, device="cpu")
    # At run time the same problem is "this backend cannot serve": the worker fails over.
    with pytest.raises(BackendUnavailable, match="model 'catalog-sd15'"):
        await backend.generate([_item(seed=1, model="catalog-sd15")])
    with pytest.raises(BackendUnavailable, match="'unknown' is not a diffusers model"):
        await backend.generate([_item(seed=1, model="unknown")])


async def test_batch_split_isolates_a_poisoned_request(backend: DiffusersBackend) -> None:
    calls: list[int] = []

    async def run(batch: list[GenerationItem]) -> list[GeneratedImage]:
        calls.append(len(batch))
        # Stands in for a request the model rejects mid-batch (bad input, or OOM on one item).
        if any("POISON" in i.params.prompt for i in batch):
            raise ValueError("prompt rejected")
        return await backend.generate(batch)

    batch = [_item(seed=s) for s in (1, 2)] + [_item(seed=3, prompt="POISON")] + [_item(seed=4)]
    results, failures = await run_with_split(batch, run)
    assert [r.request_id for r in results] == [batch[i].request_id for i in (0, 1, 3)]
    assert [(i.request_id, str(e)) for i, e in failures] == [(batch[2].request_id, "prompt rejected")]
    assert calls == [4, 2, 2, 1, 1]
