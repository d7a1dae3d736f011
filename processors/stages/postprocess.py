"""postprocess: assets.scored → assets.ready.

Renders the channel's derivatives (size, crop, format, sRGB) with the job's lineage embedded in
each file, under deterministic names: a replayed message rewrites the same objects.

It renders the image the quality stage scored: `asset_key`, read and checked against the sha256
its key names. Storage failures follow the one rule (processors/storage.py): a missing or
changed asset, or a derivative storage refuses, fails the job with its reason and is dead-lettered;
an outage is raised, so the runtime retries.
"""

from __future__ import annotations

import io
import json
from typing import Any, ClassVar

from PIL import Image

from processors.imaging.derivatives import content_type, derivative_name, derivatives_for, render_derivative
from processors.runtime import InputRecord, Outcome, PermanentError, Stage
from processors.runtime.records import job_event
from processors.storage import ObjectFault, sha256_hex, storage_errors
from processors.storage_keys import derivative_key, generated_digest
from schemas.topics import Topic


def lineage_of(job: dict[str, Any]) -> dict[str, str]:
    """What every file carries about how it was made (and how to make it again)."""
    generation = job.get("generation") or {}
    prompt = job.get("prompt") or {}
    route = job.get("route") or {}
    return {
        "lightbox:job_id": job["job_id"],
        "lightbox:event_id": job["event_id"],
        "lightbox:sku": job["product"]["sku"],
        "lightbox:template": f"{prompt.get('template_id')}@{prompt.get('template_version')}",
        "lightbox:rule": f"{route.get('rule_id')}@{route.get('rules_version')}",
        "lightbox:model": f"{generation.get('model')}@{generation.get('model_version')}",
        "lightbox:backend": str(generation.get("backend")),
        "lightbox:seed": str(generation.get("seed")),
        "lightbox:params": json.dumps(
            {k: generation.get(k) for k in ("sampler", "steps", "guidance", "width", "height")},
            sort_keys=True,
        ),
        "lightbox:references": ",".join(r["sha256"] for r in job.get("references", [])),
        "lightbox:attempt": str(job.get("attempt", 0)),
    }


class PostprocessStage(Stage):
    name: ClassVar[str] = "postprocess"
    inputs: ClassVar[tuple[Topic, ...]] = (Topic.ASSETS_SCORED,)
    outputs: ClassVar[tuple[Topic, ...]] = (Topic.ASSETS_READY,)

    async def handle(self, record: InputRecord) -> Outcome:
        job = record.value
        try:
            with storage_errors():
                job["derivatives"] = await self.run_blocking(self._render_all, job)
        except PermanentError as exc:  # a missing or changed asset, or no asset named at all
            reason = exc.reason if isinstance(exc, ObjectFault) else "invalid_request"
            event = job_event(job, "failed", reason=reason, detail=str(exc)[:500])
            return Outcome(events=[event], dead_letter=exc)
        return Outcome.forward(Topic.ASSETS_READY, job, "completed", derivatives=str(len(job["derivatives"])))

    def _render_all(self, job: dict[str, Any]) -> list[dict[str, Any]]:
        # The quality stage decoded this asset within its pixel limit before it got here.
        key = job.get("asset_key")
        if not key:
            raise PermanentError("the job names no scored image (asset_key is empty)")
        image = Image.open(io.BytesIO(self.ctx.store.get_checked(key, generated_digest(key))))
        image.load()
        lineage = lineage_of(job)
        derivatives = []
        for spec in derivatives_for(job["spec"]["channel"]):
            data = render_derivative(image, spec, lineage)
            key = derivative_key(derivative_name(job["job_id"], spec))
            self.ctx.store.put_bytes(key, data, content_type(spec), {"job-id": job["job_id"]})
            derivatives.append(
                {
                    "name": spec.name,
                    "key": key,
                    "width": spec.width,
                    "height": spec.height,
                    "format": spec.format,
                    "sha256": sha256_hex(data),
                }
            )
        return derivatives
