"""Which IPTC digital source type each backend's image declares."""

from __future__ import annotations

from pathlib import Path

import pytest

from processors.provenance.source_type import (
    COMPOSITE_SYNTHETIC,
    COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA,
    TRAINED_ALGORITHMIC_MEDIA,
    ModelFacts,
    digital_source_type,
    job_source_type,
    model_facts,
    term,
    uri,
)


@pytest.mark.parametrize(
    ("backend", "kind", "paste_back", "expected"),
    [
        ("compositor", None, False, COMPOSITE_SYNTHETIC),
        ("diffusers", "inpainting", False, COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA),
        ("diffusers", "image-to-image", True, COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA),
        ("diffusers", "image-to-image", False, TRAINED_ALGORITHMIC_MEDIA),
        ("diffusers", "text-to-image", True, TRAINED_ALGORITHMIC_MEDIA),
        ("diffusers", None, False, TRAINED_ALGORITHMIC_MEDIA),  # a model the registry does not know
        ("remote", None, False, TRAINED_ALGORITHMIC_MEDIA),
        ("something-new", "inpainting", True, TRAINED_ALGORITHMIC_MEDIA),
    ],
)
def test_each_backend_declares_what_it_made(
    backend: str, kind: str | None, paste_back: bool, expected: str
) -> None:
    assert digital_source_type(backend, kind, paste_back=paste_back) == expected


def test_terms_are_iptc_newscodes_uris() -> None:
    assert uri(COMPOSITE_SYNTHETIC) == "http://cv.iptc.org/newscodes/digitalsourcetype/compositeSynthetic"
    assert term(uri(TRAINED_ALGORITHMIC_MEDIA)) == TRAINED_ALGORITHMIC_MEDIA


def _job(backend: str, model: str, **params: str) -> dict:
    return {"generation": {"backend": backend, "model": model}, "route": {"params": params}}


def test_a_job_takes_the_model_kind_and_paste_back_from_registry_and_request() -> None:
    models = {"inpaint": ModelFacts("inpainting"), "img2img": ModelFacts("image-to-image", paste_back=True)}
    assert job_source_type(_job("diffusers", "inpaint"), models) == COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA
    # The model pastes the product back by default; a request that turns it off gets every pixel redrawn.
    assert job_source_type(_job("diffusers", "img2img"), models) == COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA
    assert (
        job_source_type(_job("diffusers", "img2img", paste_back="false"), models) == TRAINED_ALGORITHMIC_MEDIA
    )
    assert job_source_type(_job("compositor", "compositor"), {}) == COMPOSITE_SYNTHETIC
    assert job_source_type({}, {}) == TRAINED_ALGORITHMIC_MEDIA


def test_model_facts_read_the_registry_shapes_and_never_fail(tmp_path: Path) -> None:
    mapping = tmp_path / "models.yaml"
    mapping.write_text(
        "models:\n"
        "  sd-inpaint: {backend: diffusers, path: nowhere, kind: inpainting}\n"
        "  sd15: {backend: diffusers, path: nowhere}\n"
        "  sd-i2i: {backend: diffusers, path: nowhere, kind: image-to-image, options: {paste_back: true}}\n"
    )
    assert model_facts(mapping) == {
        "sd-inpaint": ModelFacts("inpainting"),
        "sd15": ModelFacts("text-to-image"),
        "sd-i2i": ModelFacts("image-to-image", paste_back=True),
    }
    listed = tmp_path / "list.yaml"
    listed.write_text("models:\n  - {name: a, backend: diffusers, kind: inpainting}\n")
    assert model_facts(listed) == {"a": ModelFacts("inpainting")}
    broken = tmp_path / "broken.yaml"
    broken.write_text("models: [unclosed\n")
    assert model_facts(broken) == {}
    assert model_facts(tmp_path / "missing.yaml") == {}
    assert model_facts("") == {}
