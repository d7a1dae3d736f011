"""The C2PA manifest definition for one published derivative of a job.

Two assertions besides the hard binding c2pa adds (the hash of the whole file, XMP included):

- ``c2pa.actions``: ``c2pa.created`` with the IPTC digital source type (the same URI the file's
  XMP declares) and the backend and model as the software agent; ``c2pa.published`` with who
  approved it and when.
- ``dev.lightbox.lineage``: the job's lineage: request, template and version, routing, model and
  version, seed and parameters, the references used (by sha256) and dropped, the quality scores,
  the channel rule verdicts and the approval. No prompt text unless ``include_prompt``: a
  template's prompt is a brand's creative brief and the file travels outside the company.

The definition is plain JSON data (c2pa's ManifestDefinition); signing.py signs it.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Mapping
from importlib import metadata
from typing import Any

from processors.imaging.formats import BY_PILLOW
from processors.provenance.source_type import TRAINED_ALGORITHMIC_MEDIA, uri
from processors.provenance.xmp import XmpFields

LINEAGE_LABEL = "dev.lightbox.lineage"
LINEAGE_SCHEMA = 1
ACTIONS_LABEL = "c2pa.actions"
GENERATOR = "Lightbox"


@functools.cache  # installed metadata is read from disk and parsed: once a process, not once a file
def generator_version() -> str:
    try:
        return metadata.version("lightbox")
    except metadata.PackageNotFoundError:
        return "0"


def build_manifest(
    job: Mapping[str, Any],
    derivative: Mapping[str, Any],
    xmp: XmpFields,
    channel_checks: list[dict[str, Any]] | None = None,
    *,
    include_prompt: bool = False,
) -> dict[str, Any]:
    """The manifest definition for ``derivative`` (a job.derivatives entry) of ``job``.

    ``xmp`` is what the file itself declares: its digital source type is the one the manifest
    states, so the two can never disagree (a file without one is declared fully generated).
    """
    fmt = BY_PILLOW[str(derivative["format"]).upper()]
    generation = job.get("generation") or {}
    source_type = xmp.digital_source_type or uri(TRAINED_ALGORITHMIC_MEDIA)
    created: dict[str, Any] = {
        "action": "c2pa.created",
        "digitalSourceType": source_type,
        "softwareAgent": {
            "name": f"{GENERATOR} {generation.get('backend', 'unknown')}: {generation.get('model', '')}",
            "version": str(generation.get("model_version", "")),
        },
    }
    actions = [created]
    review = job.get("review") or {}
    if review.get("decision") == "APPROVE":
        actions.append(
            {
                "action": "c2pa.published",
                "when": _iso(review.get("decided_at")),
                "parameters": {"description": f"approved by {review.get('reviewer')}"},
            }
        )
    return {
        "claim_generator_info": [{"name": GENERATOR, "version": generator_version()}],
        "title": f"{job['product']['sku']} {derivative['name']}.{fmt.extension}",
        "format": fmt.mime,
        "assertions": [
            {"label": ACTIONS_LABEL, "data": {"actions": actions}},
            {
                "label": LINEAGE_LABEL,
                "data": lineage_record(job, derivative, channel_checks or [], include_prompt=include_prompt),
            },
        ],
    }


def lineage_record(
    job: Mapping[str, Any],
    derivative: Mapping[str, Any],
    channel_checks: list[dict[str, Any]],
    *,
    include_prompt: bool = False,
) -> dict[str, Any]:
    """How this file was made and who let it out: every answer the design's lineage promises."""
    spec = job.get("spec") or {}
    prompt = job.get("prompt") or {}
    route = job.get("route") or {}
    generation = job.get("generation") or {}
    quality = job.get("quality") or {}
    review = job.get("review") or {}
    record: dict[str, Any] = {
        "schema": LINEAGE_SCHEMA,
        "job_id": job["job_id"],
        "request": {
            "event_id": job.get("event_id"),
            "idempotency_key": job.get("idempotency_key"),
            "submitted_at": _iso(job.get("submitted_at")),
            "sku": job["product"]["sku"],
            "asset_type": spec.get("asset_type"),
            "channel": spec.get("channel"),
            "locale": spec.get("locale"),
            "width": spec.get("width"),
            "height": spec.get("height"),
            "campaign": spec.get("campaign"),
            "asset_version": job.get("asset_version"),
            "supersedes": job.get("supersedes"),
            "replay_of": job.get("replay_of"),
            "attempt": job.get("attempt", 0),
        },
        "template": {
            "id": prompt.get("template_id") or spec.get("template_id"),
            "version": prompt.get("template_version") or spec.get("template_version"),
        },
        "route": {
            "rule_id": route.get("rule_id"),
            "rules_version": route.get("rules_version"),
            "pool": route.get("pool"),
            "canary": route.get("canary"),
        },
        "model": {
            "backend": generation.get("backend"),
            "name": generation.get("model"),
            "version": generation.get("model_version"),
            "fell_back_from": generation.get("fell_back_from"),
        },
        "seed": generation.get("seed"),
        "parameters": {
            **{str(k): str(v) for k, v in sorted((route.get("params") or {}).items())},
            **{k: generation.get(k) for k in ("sampler", "steps", "guidance", "width", "height")},
        },
        "references": [
            {
                "role": r.get("role"),
                "sha256": r.get("sha256"),
                "content_type": r.get("content_type"),
                "width": r.get("width"),
                "height": r.get("height"),
            }
            for r in job.get("references") or []
        ],
        "dropped_references": [
            {"role": d.get("role"), "reason": d.get("reason"), "url_sha256": d.get("url_sha256")}
            for d in job.get("dropped_references") or []
        ],
        "quality": {
            "passed": quality.get("passed"),
            "scores": {str(k): float(v) for k, v in sorted((quality.get("scores") or {}).items())},
            "reasons": list(quality.get("reasons") or []),
        },
        "derivative": {
            "name": derivative.get("name"),
            "format": derivative.get("format"),
            "width": derivative.get("width"),
            "height": derivative.get("height"),
            # The file as postprocess rendered it, before this manifest was added.
            "rendered_sha256": derivative.get("sha256"),
        },
        "channel_checks": channel_checks,
        "review": {
            "decision": review.get("decision"),
            "reviewer": review.get("reviewer"),
            "decided_at": _iso(review.get("decided_at")),
        },
    }
    if include_prompt:
        record["prompt"] = {
            "positive": prompt.get("positive"),
            "negative": prompt.get("negative"),
            "variables": dict(prompt.get("variables") or {}),
            "text_overlay": spec.get("text_overlay"),
        }
    return record


def _iso(value: Any) -> str | None:
    """Timestamps as ISO 8601 UTC: a datetime after Avro decoding, epoch ms before it."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    else:
        moment = dt.datetime.fromtimestamp(int(value) / 1000, dt.UTC)
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
