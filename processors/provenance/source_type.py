"""Which IPTC digital source type a generated image is, from what made it.

The value goes into the file's XMP (Iptc4xmpExt:DigitalSourceType) and into the C2PA manifest's
``c2pa.created`` action. The vocabulary is the IPTC NewsCodes "digitalsourcetype" scheme; the
choice per backend is argued in docs/provenance.md:

- compositor: the real product photo (a capture) cut out onto a scene drawn by code from a
  seed, with no trained model anywhere: a composite with a synthetic, but not AI, element,
  ``compositeSynthetic``.
- diffusers inpainting (and image-to-image with the product's pixels pasted back): a real photo
  composed with model-generated surroundings, ``compositeWithTrainedAlgorithmicMedia``.
- diffusers text-to-image, image-to-image without paste-back (every pixel is the model's), the
  remote API (it is sent a prompt, never the product), or anything not known: the whole image
  is model output, ``trainedAlgorithmicMedia``. Unknown is declared as fully generated because
  understating machine generation is the one mistake this marking exists to prevent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

IPTC_DIGITAL_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/"

TRAINED_ALGORITHMIC_MEDIA = "trainedAlgorithmicMedia"
COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA = "compositeWithTrainedAlgorithmicMedia"
COMPOSITE_SYNTHETIC = "compositeSynthetic"

# Every value this module can give, for readers that check a file's claim against the vocabulary.
KNOWN_VALUES: frozenset[str] = frozenset(
    {TRAINED_ALGORITHMIC_MEDIA, COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA, COMPOSITE_SYNTHETIC}
)

# Model kinds (gpu_workers/registry.py KINDS) that start from the placed product photo.
_PRODUCT_KINDS = frozenset({"inpainting", "image-to-image"})
_TRUE = frozenset({"1", "true", "yes", "on"})


def uri(value: str) -> str:
    """The NewsCodes URI of a term: what XMP and C2PA carry."""
    return f"{IPTC_DIGITAL_SOURCE_TYPE}{value}"


def term(value_or_uri: str) -> str:
    """The term of a NewsCodes URI (a bare term is returned as it is)."""
    return value_or_uri.removeprefix(IPTC_DIGITAL_SOURCE_TYPE)


def digital_source_type(backend: str, model_kind: str | None = None, *, paste_back: bool = False) -> str:
    """The IPTC term for an image made by ``backend`` (with a model of ``model_kind``)."""
    if backend == "compositor":
        return COMPOSITE_SYNTHETIC
    composes_photo = model_kind == "inpainting" or (model_kind == "image-to-image" and paste_back)
    if backend == "diffusers" and composes_photo:
        return COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA
    return TRAINED_ALGORITHMIC_MEDIA


@dataclass(frozen=True)
class ModelFacts:
    """What the registry says about a model that decides its images' source type."""

    kind: str = "text-to-image"
    # The model's own default for the paste_back option; a request's option overrides it.
    paste_back: bool = False


def places_product(backend: str, model_kind: str | None) -> bool:
    """Whether the backend put the product photo on the canvas by the framing rule
    (processors.imaging.framing.place), so its mask's placement is known without looking."""
    return backend == "compositor" or (backend == "diffusers" and model_kind in _PRODUCT_KINDS)


def job_source_type(job: Mapping[str, Any], models: Mapping[str, ModelFacts]) -> str:
    """The term for the chosen image of ``job`` (its ``generation`` and ``route`` sections)."""
    generation = job.get("generation") or {}
    facts = models.get(str(generation.get("model") or ""))
    params = (job.get("route") or {}).get("params") or {}
    default = facts.paste_back if facts else False
    paste_back = _is_true(params["paste_back"]) if "paste_back" in params else default
    kind = facts.kind if facts else None
    return digital_source_type(str(generation.get("backend") or ""), kind, paste_back=paste_back)


def model_facts(models_file: str | Path | None) -> dict[str, ModelFacts]:
    """Model name -> its facts, read from the model registry YAML (gpu_workers/registry.py's shape).

    Only these fields are read, and nothing is checked: postprocess runs where the weights are
    not, and a registry it cannot read must not stop it. A model missing here is "unknown",
    which digital_source_type treats as fully generated.
    """
    if not models_file:
        return {}
    try:
        data = yaml.safe_load(Path(models_file).read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}
    models = data.get("models") if isinstance(data, Mapping) else None
    entries: list[tuple[str, Any]] = []
    if isinstance(models, Mapping):
        entries = [(str(name), raw) for name, raw in models.items()]
    elif isinstance(models, list):
        entries = [(str(raw.get("name", "")), raw) for raw in models if isinstance(raw, Mapping)]
    facts = {}
    for name, raw in entries:
        if not name or not isinstance(raw, Mapping):
            continue
        options = raw.get("options") if isinstance(raw.get("options"), Mapping) else {}
        facts[name] = ModelFacts(
            kind=str(raw.get("kind", "text-to-image")),
            paste_back=_is_true(options.get("paste_back", "")),
        )
    return facts


def _is_true(value: object) -> bool:
    # YAML gives booleans, options give strings: both spell yes the registry's way.
    return str(value).strip().lower() in _TRUE
