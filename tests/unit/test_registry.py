from __future__ import annotations

from pathlib import Path

import pytest

from gpu_workers.registry import ModelRegistry, ModelRegistryError, ModelSpec


def _fake_pipeline(root: Path) -> Path:
    (root / "unet").mkdir(parents=True)
    (root / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    (root / "unet" / "config.json").write_text('{"block_out_channels": [32, 64]}')
    (root / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"\x00" * 3_000_000)
    (root / "README.md").write_text("not part of the version")
    return root


def test_from_file_resolves_relative_paths_and_types(tmp_path: Path) -> None:
    _fake_pipeline(tmp_path / "models" / "sd")
    config = tmp_path / "models.yaml"
    config.write_text(
        """
models:
  sd-fast:
    backend: diffusers
    path: models/sd
    kind: text-to-image
    dtype: bf16
    scheduler: DPM
    steps: 20
    guidance: 6
    width: 768
    height: 512
    pool: gpu
    options: {channels_last: true, compile: max-autotune}
  studio:
    backend: compositor
    pool: cpu
"""
    )
    registry = ModelRegistry.from_file(config)
    registry.validate()
    spec = registry.get("sd-fast")
    assert spec.path == tmp_path / "models" / "sd"
    assert (spec.dtype, spec.scheduler, spec.steps, spec.guidance) == ("bfloat16", "dpm", 20, 6.0)
    assert (spec.width, spec.height, spec.pool) == (768, 512, "gpu")
    assert spec.flag("channels_last") and not spec.flag("fuse_qkv")
    assert spec.option("compile") == "max-autotune"
    assert registry.get("studio").path is None
    assert registry.names() == ["sd-fast", "studio"]
    assert "studio" in registry and len(registry) == 2


def test_from_dict_accepts_a_list() -> None:
    registry = ModelRegistry.from_dict(
        {"models": [{"name": "remote-xl", "backend": "remote", "pool": "remote"}]}
    )
    assert registry.get("remote-xl").backend == "remote"


def test_missing_path_is_a_clear_error_naming_the_model(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    registry = ModelRegistry.from_dict({"models": {"ghost": {"backend": "diffusers", "path": str(missing)}}})
    with pytest.raises(ModelRegistryError) as err:
        registry.validate()
    assert str(err.value) == f"model 'ghost': path {missing} does not exist"


def test_validate_reports_every_broken_model(tmp_path: Path) -> None:
    registry = ModelRegistry.from_dict(
        {
            "models": {
                "a": {"backend": "diffusers"},
                "b": {"backend": "magic"},
                "c": {"backend": "diffusers", "path": str(tmp_path)},  # no model_index.json
            }
        }
    )
    with pytest.raises(ModelRegistryError) as err:
        registry.validate()
    message = str(err.value)
    assert "model 'a': a diffusers model needs a local 'path'" in message
    assert "model 'b': backend 'magic'" in message
    assert "model 'c'" in message and "model_index.json" in message


def test_bad_fields_name_the_model() -> None:
    with pytest.raises(ModelRegistryError, match="model 'x': unknown field"):
        ModelRegistry.from_dict({"models": {"x": {"backend": "remote", "stepz": 3}}})
    with pytest.raises(ModelRegistryError, match="model 'y'"):
        ModelRegistry.from_dict({"models": {"y": {"backend": "remote", "steps": "many"}}})
    with pytest.raises(ModelRegistryError, match="unknown model 'z'"):
        ModelRegistry.from_dict({"models": {}}).get("z")


def test_missing_registry_file(tmp_path: Path) -> None:
    with pytest.raises(ModelRegistryError, match="does not exist"):
        ModelRegistry.from_file(tmp_path / "absent.yaml")


def test_version_is_a_content_hash(tmp_path: Path) -> None:
    root = _fake_pipeline(tmp_path / "sd")
    data = {"models": {"sd": {"backend": "diffusers", "path": str(root)}}}
    first = ModelRegistry.from_dict(data).version("sd")
    assert len(first) == 12 and int(first, 16) >= 0

    # Files that are not weights or configs do not change the version.
    (root / "README.md").write_text("edited")
    assert ModelRegistry.from_dict(data).version("sd") == first

    # Same bytes elsewhere: same version (paths are relative to the model root).
    copy = _fake_pipeline(tmp_path / "copy")
    (copy / "README.md").write_text("edited")
    assert (
        ModelRegistry.from_dict({"models": {"sd": {"backend": "diffusers", "path": str(copy)}}}).version("sd")
        == first
    )

    # Changed weights: new version; but a registry that already hashed keeps its cached value.
    cached = ModelRegistry.from_dict(data)
    assert cached.version("sd") == first
    (root / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"\x01" * 10)
    assert cached.version("sd") == first
    assert ModelRegistry.from_dict(data).version("sd") != first


def test_version_without_weights_hashes_the_definition() -> None:
    a = ModelRegistry.from_dict({"models": {"c": {"backend": "compositor", "pool": "cpu"}}})
    b = ModelRegistry.from_dict(
        {"models": {"c": {"backend": "compositor", "pool": "cpu", "options": {"scene": "x"}}}}
    )
    assert a.version("c") == a.version("c")
    assert a.version("c") != b.version("c")


def test_spec_is_hashable_and_frozen() -> None:
    spec = ModelSpec(name="m", backend="remote", options={"a": "1"})
    assert {spec: 1}[spec] == 1
    with pytest.raises(AttributeError):
        spec.steps = 3  # type: ignore[misc]
