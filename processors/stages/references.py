"""references (persist first): jobs.accepted → jobs.referenced.

Every reference is downloaded, proven by decoding, and stored content-addressed before anything
else happens; the job leaves with storage keys only and its source URLs removed. Product references
also get a foreground mask, stored beside them. A dropped optional reference is recorded on the job
and as an event; a failed required one fails the job loudly.
"""

from __future__ import annotations

import io
from typing import Any, ClassVar

from PIL import Image

from processors import storage_keys
from processors.imaging import formats
from processors.imaging.segmenter import ModelSegmenter, segment_product
from processors.references.fetcher import ReferenceFetcher
from processors.references.persist import PersistedReference, ReferencePersister
from processors.references.url_policy import FetchPolicy
from processors.runtime import Event, InputRecord, Outcome, Stage
from processors.runtime.records import job_event
from schemas.topics import Topic


class ReferencesStage(Stage):
    name: ClassVar[str] = "references"
    inputs: ClassVar[tuple[Topic, ...]] = (Topic.JOBS_ACCEPTED,)
    outputs: ClassVar[tuple[Topic, ...]] = (Topic.JOBS_REFERENCED,)
    concurrency: ClassVar[int] = 16

    async def start(self) -> None:
        settings = self.ctx.settings
        refs = settings.references
        self.policy = FetchPolicy.from_settings(refs)
        self.fetcher = ReferenceFetcher(self.policy)
        await self.fetcher.__aenter__()
        self.persister = ReferencePersister(self.ctx.store, self.fetcher)
        # A configured model segmenter is loaded once; without one, masks are classical.
        self.segmenter = ModelSegmenter.from_path(refs.segmenter_path) if refs.segmenter_path else None

    async def stop(self) -> None:
        await self.fetcher.__aexit__(None, None, None)

    async def handle(self, record: InputRecord) -> Outcome:
        job = record.value
        sources = [(r["url"], r["role"], bool(r["required"])) for r in job["source_references"]]
        stored, dropped = await self.persister.persist_all(sources)
        outcome = Outcome()
        job["dropped_references"] = []
        for drop in dropped:
            job["dropped_references"].append({**drop.to_record(), "detail": drop.detail[:500]})
            # The URL goes to the event log (for SREs), never onto the job.
            outcome.events.append(
                Event(
                    job["job_id"],
                    "dropped_reference",
                    reason=drop.reason,
                    detail=drop.detail[:500],
                    attempt=int(job.get("attempt") or 0),
                    discriminator=drop.url_sha256,
                    attributes={"url": drop.url[:2048], "role": drop.role, "required": str(drop.required)},
                )
            )
        required_failures = [d for d in dropped if d.required]
        if required_failures:
            failure = required_failures[0]
            failed = Outcome.fail(
                job,
                "missing_source_file",
                f"required {failure.role} reference: {failure.reason}: {failure.detail}"[:1000],
            )
            outcome.events.extend(failed.events)
            return outcome
        if not any(ref.role == "PRODUCT" for ref in stored):
            outcome.events.extend(
                Outcome.fail(job, "missing_source_file", "no product reference stored").events
            )
            return outcome
        job["references"] = [await self._with_mask(ref) for ref in stored]
        job["source_references"] = []  # nothing downstream may see an external URL
        cached = sum(1 for ref in stored if ref.from_cache)
        outcome.outputs.extend(Outcome.forward(Topic.JOBS_REFERENCED, job, "running").outputs)
        outcome.events.append(
            job_event(
                job,
                "running",
                attributes={"stored": str(len(stored)), "cached": str(cached), "dropped": str(len(dropped))},
            )
        )
        return outcome

    async def _with_mask(self, ref: PersistedReference) -> dict[str, Any]:
        mask_key = None
        if ref.role == "PRODUCT":
            mask_key = await self.run_blocking(self._store_mask, ref)
        return ref.to_record(mask_key=mask_key)

    def _store_mask(self, ref: PersistedReference) -> str:
        # Masks are keyed by the image's digest: one mask per distinct product image, ever.
        digest = ref.sha256
        mask_key = storage_keys.mask_key(digest)
        if self.ctx.store.exists(mask_key):
            return mask_key
        # The bytes just downloaded, if this call downloaded them; storage only after a cache hit.
        data = ref.data if ref.data is not None else self.ctx.store.get_bytes(ref.key)
        image = Image.open(io.BytesIO(data))
        product_mask = segment_product(image, self.segmenter)
        buf = io.BytesIO()
        product_mask.image.save(buf, format="PNG")
        # How the mask was made (alpha, model, classical) travels with it, for lineage.
        metadata = {"source-sha256": digest, "mask-source": product_mask.source}
        self.ctx.store.put_bytes(mask_key, buf.getvalue(), formats.PNG, metadata)
        return mask_key
