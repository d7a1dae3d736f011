"""The variables a template may declare, taken from a Job record."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from processors.intake.event_schema import text_or_none

# How many product attributes variables_for_job puts in attributes_text, and how long a value
# may be to qualify: prose-length values (descriptions) would crowd out the scene.
MAX_PROMPT_ATTRIBUTES = 6
MAX_PROMPT_ATTRIBUTE_CHARS = 40


def variables_for_job(job: Mapping[str, Any]) -> dict[str, object]:
    """Every variable a template may declare, taken from a Job record."""
    product = job.get("product") or {}
    spec = job.get("spec") or {}
    attributes = dict(product.get("attributes") or {})
    width, height = int(spec.get("width") or 0), int(spec.get("height") or 0)
    return {
        "product_title": product.get("title"),
        "brand": product.get("brand"),
        "category": product.get("category"),
        "attributes": attributes,
        "attributes_text": attributes_text(attributes),
        "asset_type": spec.get("asset_type"),
        "channel": spec.get("channel"),
        "locale": spec.get("locale"),
        "text_overlay": text_or_none(spec.get("text_overlay")),
        "campaign": spec.get("campaign"),
        "width": width,
        "height": height,
        "aspect": ("square" if width == height else "landscape" if width > height else "portrait"),
    }


def attributes_text(attributes: Mapping[str, str]) -> str:
    """'colour: red, material: steel': short attributes in key order (stable prompts)."""
    items = [
        f"{key.replace('_', ' ')}: {value}"
        for key, value in sorted(attributes.items())
        if value and len(value) <= MAX_PROMPT_ATTRIBUTE_CHARS and not key.startswith("_")
    ]
    return ", ".join(items[:MAX_PROMPT_ATTRIBUTES])
