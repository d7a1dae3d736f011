"""Fan-out: one accepted catalog event becomes one Job per asset_type x channel x locale.

Each job names its asset slot (the idempotency key: sku, asset type, size, channel, locale,
template and version, overlay text) and the version of that slot's asset it makes. A version is
numbered by the event's occurred_at (epoch ms), and the job id is derived (uuid5 under a fixed
namespace, never random) from the slot, the version and the product digest, so a redelivered or
resubmitted event yields the same job ids, and each new version of a slot a new one. Whether a
job is new work, an update or a duplicate is intake's table's call (processors/intake/dedup.py);
fan-out only builds the records, which match the latest job schema (intake's sections filled).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from processors.intake.content import occurred_ms, product_digest
from processors.intake.event_schema import text_or_none, with_defaults

# Fixed forever: changing it changes every job id and defeats de-duplication across a deploy.
JOB_NAMESPACE = uuid.UUID("6f1c2a4e-3b7d-5c8e-9a0f-1d2e3f4a5b6c")


def _escape(part: str) -> str:
    # Keeps the key injective: no component can forge a separator.
    return part.replace("%", "%25").replace("|", "%7C")


def idempotency_key(
    sku: str,
    asset_type: str,
    width: int,
    height: int,
    channel: str,
    locale: str,
    template_id: str,
    template_version: str,
    *,
    text_overlay: str | None = None,
) -> str:
    """sku|asset_type|WxH|channel|locale|template_id|template_version[|text:<digest>].

    The overlay text is part of the asset (a banner reading "Summer sale" is not the one reading
    "Winter sale"), so when present its digest joins the key; absent, the key is the plain slot.
    """
    parts = [sku, asset_type, f"{width}x{height}", channel, locale, template_id, template_version]
    key = "|".join(_escape(p) for p in parts)
    text = text_or_none(text_overlay)
    if text is not None:
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]
        key += f"|text:{digest}"
    return key


def job_id_for(key: str) -> str:
    return str(uuid.uuid5(JOB_NAMESPACE, key))


def version_key(slot: str, asset_version: int, digest: str) -> str:
    """What a version's job id is derived from. The digest keeps two contents that claim the same
    time apart even after intake has forgotten the slot (docs/intake.md)."""
    return f"{slot}|v{asset_version}|{digest[:16]}"


def fan_out(
    event: Mapping[str, Any],
    accepted_at_ms: int,
    template_version_of: Callable[[str, str | None], str],
) -> list[dict[str, Any]]:
    """Job records for a validated event, in asset_type, channel, locale order.

    template_version_of(template_id, pinned_or_None) resolves the version now, at intake, so the
    key (and the job id) names the exact template that will render the prompt. Repeated values in
    a list (["web", "web"]) would name the same job twice; they are collapsed.
    """
    ev = with_defaults(event)
    product, request = ev["product"], ev["request"]
    version = occurred_ms(event)
    digest = product_digest(event)
    template_id = request["template_id"]
    template_version = template_version_of(template_id, request["template_version"])
    jobs = []
    for asset_type in distinct(request["asset_types"]):
        for channel in distinct(request["channels"]):
            for locale in distinct(request["locales"]):
                key = idempotency_key(
                    product["sku"],
                    asset_type,
                    request["width"],
                    request["height"],
                    channel,
                    locale,
                    template_id,
                    template_version,
                    text_overlay=request["text_overlay"],
                )
                spec = {
                    "asset_type": asset_type,
                    "channel": channel,
                    "locale": locale,
                    "template_id": template_id,
                    "template_version": template_version,
                    "width": request["width"],
                    "height": request["height"],
                    "text_overlay": request["text_overlay"],
                    "risk": str(request["risk"]),
                    "confidential": request["confidential"],
                    "priority": request["priority"],
                    "variants": request["variants"],
                    "campaign": ev["campaign"],
                }
                jobs.append(_job(key, ev, accepted_at_ms, spec, version, digest))
    return jobs


def _job(
    key: str,
    ev: Mapping[str, Any],
    accepted_at_ms: int,
    spec: dict[str, Any],
    version: int,
    digest: str,
) -> dict[str, Any]:
    product = ev["product"]
    # Fresh containers per job: stages mutate their job, and jobs must not share state.
    return {
        "job_id": job_id_for(version_key(key, version, digest)),
        "idempotency_key": key,
        "event_id": ev["event_id"],
        "submitted_at": accepted_at_ms,
        "product": {
            "sku": product["sku"],
            "title": product["title"],
            "brand": product["brand"],
            "category": product["category"],
            "attributes": dict(product["attributes"]),
        },
        "spec": spec,
        "source_references": [
            {"url": r["url"], "role": str(r["role"]), "required": bool(r["required"])}
            for r in ev["references"]
        ],
        "references": [],
        "dropped_references": [],
        "prompt": None,
        "route": None,
        "generation": None,
        "quality": None,
        "asset_key": None,
        "derivatives": [],
        "review": None,
        "published_keys": [],
        "attempt": 0,
        "replay_of": None,
        "asset_version": version,
        # Intake names the version this one replaces, once its table has said it is an update.
        "supersedes": None,
        "product_sha256": digest,
        "source": ev.get("source") or "",
        "webhook_url": ev.get("webhook_url"),
        # Intake's credit reservation (job v4), set once the job is budgeted and fits.
        "credits": None,
    }


def distinct(values: Iterable[str]) -> list[str]:
    """The values in first-seen order, each once: what one job per value means. Intake's job cap
    counts with this too, so the cap and the fan-out agree on how many jobs an event makes."""
    return list(dict.fromkeys(values))
