"""postprocess: assets.scored → assets.ready.

Renders the channel's derivatives (processors/channels/presets.yaml: size, framing that keeps the
product in frame, format, background, sRGB) with the job's lineage and its IPTC digital source type
in each file's XMP, under deterministic names: a replayed message rewrites the same objects. Each
derivative is checked against its channel's rules after it is encoded; one that breaks a rule
flags the job (quality.passed false, the rule among quality.reasons), which publish holds for
review whatever its policy. Signing is publish's: the last step before a file leaves.

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

from processors.channels.presets import load_presets
from processors.channels.product_mask import job_product_mask
from processors.channels.render import (
    ChannelDerivative,
    check_summary,
    hold_for_review,
    needs_product_mask,
    render_channel,
)
from processors.imaging import formats
from processors.imaging.derivatives import Metadata, content_type, derivative_name
from processors.provenance.source_type import job_source_type, model_facts, uri
from processors.references.images import ReferenceImages
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
    # CPU-bound rendering: up to 8 records a batch (Stage.max_batch; each is a Kafka
    # transaction), as many at once as a small machine has cores (Pillow's resize and
    # encode leave the GIL).
    max_batch: ClassVar[int] = 8
    concurrency: ClassVar[int] = 2

    async def start(self) -> None:
        settings = self.ctx.settings
        formats.load_codecs()
        # Read once: a broken presets file stops the stage here, not each job later.
        self.presets = load_presets(settings.channels.presets_file)
        self.models = model_facts(settings.generation.models_file)
        self.references = ReferenceImages(self.ctx.store)

    async def handle(self, record: InputRecord) -> Outcome:
        job = record.value
        try:
            with storage_errors():
                job["derivatives"], rendered = await self.run_blocking(self._render_all, job)
        except PermanentError as exc:  # a missing or changed asset, or no asset named at all
            reason = exc.reason if isinstance(exc, ObjectFault) else "invalid_request"
            event = job_event(job, "failed", reason=reason, detail=str(exc)[:500])
            return Outcome(events=[event], dead_letter=exc)
        # A derivative that breaks its channel's rules goes to review with the rule named.
        hold_for_review(job, rendered)
        return Outcome.forward(
            Topic.ASSETS_READY,
            job,
            "completed",
            derivatives=str(len(job["derivatives"])),
            **check_summary(rendered),
        )

    def _render_all(self, job: dict[str, Any]) -> tuple[list[dict[str, Any]], list[ChannelDerivative]]:
        # The quality stage decoded this asset within its pixel limit before it got here.
        key = job.get("asset_key")
        if not key:
            raise PermanentError("the job names no scored image (asset_key is empty)")
        image = Image.open(io.BytesIO(self.ctx.store.get_checked(key, generated_digest(key))))
        image.load()
        presets = self.presets.for_channel(job["spec"]["channel"])
        mask = None
        if needs_product_mask(presets):
            mask = job_product_mask(job, image.size, self._reference, self.models)
        metadata = Metadata(lineage_of(job), uri(job_source_type(job, self.models)))
        rendered = render_channel(image, presets, metadata, mask)
        derivatives = []
        for out in rendered:
            spec, data = out.spec, out.data
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
        return derivatives, rendered

    def _reference(self, reference: dict[str, Any]) -> tuple[Image.Image, Image.Image | None]:
        return self.references.product(reference), self.references.mask(reference)
