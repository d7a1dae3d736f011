"""One generation request: a generation.requests record read into what a backend needs.

The record's job names its stored product reference (never a URL: persist first), its rendered
prompt and its route (backend, model, fallbacks, parameters). Reading it loads and decodes the
product and its mask from storage, derives the seed, and expands best-of-N variants into items
that differ only in seed, so they share a batch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from PIL import Image

from gpu_workers.backends.base import DEFAULT_SCENE, GenerationItem, GenerationParams
from gpu_workers.batching import expand_best_of_n
from gpu_workers.failover import Choice
from processors.references.images import product_reference
from processors.runtime import InputRecord, PermanentError
from processors.storage import ObjectMissing

DEFAULTS = {"steps": "25", "guidance": "7.5", "sampler": "euler"}


class ExternalUrlError(PermanentError):
    """A URL reached the generator: the persist-first rule was broken upstream."""


class NoProductReference(ObjectMissing):
    """The job carries no stored product reference at all."""


@dataclass
class GenerationRequest:
    record: InputRecord
    job: dict[str, Any]
    choices: tuple[Choice, ...]
    items: list[GenerationItem]  # one per best-of-N variant, in variant order

    def variant_of(self, item: GenerationItem) -> int:
        return next(i for i, candidate in enumerate(self.items) if candidate.request_id == item.request_id)


def assert_no_external_urls(job: dict[str, Any]) -> None:
    if job.get("source_references"):
        raise ExternalUrlError("job still carries source URLs; references must be persisted first")
    for ref in job.get("references", []):
        for key in ("key", "mask_key"):
            value = str(ref.get(key) or "")
            if "://" in value:
                raise ExternalUrlError(f"reference {key} is a URL ({value[:80]}), not a storage key")


def seed_for(job: dict[str, Any]) -> int:
    if seed := job["route"]["params"].get("seed"):
        return int(seed)
    digest = hashlib.sha256(f"{job['job_id']}|{job.get('attempt', 0)}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFF_FFFF


def parse_choices(route: dict[str, Any]) -> tuple[Choice, ...]:
    choices = [Choice(route["backend"], route["model"])]
    for fallback in route.get("fallbacks", []):
        backend, _, model = fallback.partition(":")
        choices.append(Choice(backend, model or backend))
    return tuple(dict.fromkeys(choices))


def identity(record: InputRecord) -> str:
    """Equal for two copies of one request (at least once: a producer retry, a redone upstream
    batch), which are generated once and answered once each. Copies that differ in anything are
    different requests, generated apart."""
    canonical = json.dumps(record.value, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def check(job: dict[str, Any]) -> dict[str, Any]:
    """The job's stored product reference, once the job is fit to generate; raises otherwise."""
    assert_no_external_urls(job)
    if not job.get("route") or not job.get("prompt"):
        raise PermanentError("generation request without prompt or route")
    ref = product_reference(job)
    if ref is None:
        raise NoProductReference("no stored product reference on the job")
    return ref


def build(record: InputRecord, slot: int) -> GenerationRequest:
    """The request of batch slot `slot`, without its product yet (see with_product): a request
    with unusable parameters is refused before any storage read. Item ids carry the slot, so
    they are unique in the batch whatever the records hold."""
    job = record.value
    params = {**DEFAULTS, **job["route"]["params"]}
    spec = job["spec"]
    base = GenerationItem(
        # The attempt is part of the id: a retry of a job may share a batch with its first try.
        request_id=f"{job['job_id']}@{job.get('attempt', 0)}",
        params=GenerationParams(
            model=job["route"]["model"],
            width=spec["width"],
            height=spec["height"],
            steps=int(params["steps"]),
            guidance=float(params["guidance"]),
            sampler=params["sampler"],
            seed=seed_for(job),
            prompt=job["prompt"]["positive"],
            negative_prompt=job["prompt"]["negative"],
            options=tuple(sorted((k, str(v)) for k, v in params.items())),
        ),
        scene=params.get("scene", DEFAULT_SCENE),
    )
    variants = expand_best_of_n(base, max(1, int(spec.get("variants") or 1)))
    items = [
        dataclasses.replace(item, request_id=f"{base.request_id}#{index}/s{slot}")
        for index, item in enumerate(variants)
    ]
    return GenerationRequest(record, job, parse_choices(job["route"]), items)


def with_product(request: GenerationRequest, product: Image.Image, mask: Image.Image | None) -> None:
    for item in request.items:
        item.product, item.mask = product, mask
