"""references (persist first): jobs.accepted → jobs.referenced.

Every reference is downloaded, proven by decoding, and stored content-addressed before anything
else happens; the job leaves with storage keys only and its source URLs removed. Product references
also get a foreground mask, stored beside them, and must show a product (references/visibility.py):
one that is transparent, one colour, blank, or whose mask covers less than the configured minimum
is refused as product_not_visible. A dropped optional reference is recorded on the job and as an
event; a failed required one fails the job loudly, with the reference's own reason.

Memory is bounded by construction: downloads in flight are capped per process and per host
(references/slots.py), every decode (the proof and the mask's) runs through this stage's
run_blocking under one budget of decoded bytes (references/decoding.py), and downloaded bytes are
kept past the upload only for product references, whose mask needs them.
"""

from __future__ import annotations

import asyncio
import io
import weakref
from dataclasses import dataclass
from typing import Any, ClassVar

from minio.error import S3Error
from PIL import Image

from processors import storage_keys
from processors.imaging import formats
from processors.imaging.masks import DEFAULT_PARAMS
from processors.imaging.segmenter import ModelSegmenter, segment_product
from processors.kafka_clients import MAX_POLL_INTERVAL_MS
from processors.references.decoding import decoded_bytes, return_freed_pixels_to_the_os
from processors.references.fetcher import ReferenceFetcher
from processors.references.persist import DroppedReference, PersistedReference, ReferencePersister, lock_for
from processors.references.url_policy import FetchPolicy
from processors.references.visibility import (
    REASON_PRODUCT_NOT_VISIBLE,
    ProductMeasures,
    Visibility,
    judge,
    measure_product,
)
from processors.runtime import Event, InputRecord, Outcome, Stage
from processors.runtime.records import job_event
from processors.storage import is_missing
from schemas.topics import Topic

PRODUCT = "PRODUCT"
# The consumer's max.poll.interval: a batch that takes longer gets the consumer thrown out of its
# group, so one reference's retries must end well before.
MAX_POLL_INTERVAL_S = MAX_POLL_INTERVAL_MS / 1000


@dataclass(frozen=True)
class _ProductCheck:
    ref: PersistedReference
    mask_key: str
    visibility: Visibility


class ReferencesStage(Stage):
    name: ClassVar[str] = "references"
    inputs: ClassVar[tuple[Topic, ...]] = (Topic.JOBS_ACCEPTED,)
    outputs: ClassVar[tuple[Topic, ...]] = (Topic.JOBS_REFERENCED,)
    concurrency: ClassVar[int] = 16

    async def start(self) -> None:
        settings = self.ctx.settings
        refs = settings.references
        if refs.retry_window_s + refs.total_timeout_s >= MAX_POLL_INTERVAL_S:
            raise ValueError(
                f"references.retry_window_s ({refs.retry_window_s}) + total_timeout_s "
                f"({refs.total_timeout_s}) must stay under the consumer's max.poll.interval "
                f"({MAX_POLL_INTERVAL_S:.0f} s): a longer batch is thrown out of its group"
            )
        formats.load_codecs()
        # Freed decodes go back to the OS at once, so the decode budget bounds what stays resident.
        return_freed_pixels_to_the_os()
        self.policy = FetchPolicy.from_settings(refs)
        self.fetcher = ReferenceFetcher(self.policy, run_blocking=self.run_blocking)
        await self.fetcher.__aenter__()
        self.persister = ReferencePersister(self.ctx.store, self.fetcher)
        self._mask_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        # A configured model segmenter is loaded once; without one, masks are classical.
        self.segmenter = ModelSegmenter.from_path(refs.segmenter_path) if refs.segmenter_path else None

    async def stop(self) -> None:
        await self.fetcher.__aexit__(None, None, None)

    async def handle(self, record: InputRecord) -> Outcome:
        job = record.value
        sources = [(r["url"], r["role"], bool(r["required"])) for r in job["source_references"]]
        stored, dropped = await self.persister.persist_all(sources, keep_bytes_for={PRODUCT})
        kept: list[tuple[PersistedReference, str | None]] = []
        for ref in stored:
            if ref.role != PRODUCT:
                kept.append((ref, None))
                continue
            check = await self._check_product(ref)
            if check.visibility.visible:
                kept.append((ref, check.mask_key))
            else:
                dropped.append(_not_visible(check))

        outcome = Outcome()
        job["dropped_references"] = []
        for drop in dropped:
            job["dropped_references"].append({**drop.to_record(), "detail": drop.detail[:500]})
            outcome.events.append(_drop_event(job, drop))
        required_failures = [d for d in dropped if d.required]
        if required_failures:
            failure = required_failures[0]
            outcome.events.extend(_fail(job, failure).events)
            return outcome
        if not any(ref.role == PRODUCT for ref, _ in kept):
            invisible = next((d for d in dropped if d.reason == REASON_PRODUCT_NOT_VISIBLE), None)
            failed = (
                _fail(job, invisible)
                if invisible is not None
                else Outcome.fail(job, "missing_source_file", "no product reference stored")
            )
            outcome.events.extend(failed.events)
            return outcome
        job["references"] = [ref.to_record(mask_key=mask_key) for ref, mask_key in kept]
        job["source_references"] = []  # nothing downstream may see an external URL
        cached = sum(1 for ref, _ in kept if ref.from_cache)
        outcome.outputs.extend(Outcome.forward(Topic.JOBS_REFERENCED, job, "running").outputs)
        outcome.events.append(
            job_event(
                job,
                "running",
                attributes={"stored": str(len(kept)), "cached": str(cached), "dropped": str(len(dropped))},
            )
        )
        return outcome

    async def _check_product(self, ref: PersistedReference) -> _ProductCheck:
        """The product's mask (made once per distinct image) and whether it shows a product."""
        settings = self.ctx.settings.references
        mask_key = storage_keys.mask_key(ref.sha256)
        # One product fans out into a job per channel and locale, often in one batch: the first
        # makes the mask, the others wait and read its measures.
        async with lock_for(self._mask_locks, ref.sha256):
            measures = await self.run_blocking(self._stored_measures, mask_key)
            if measures is None:
                async with self.fetcher.decode_budget.hold(_mask_step_bytes(ref)):
                    measures = await self.run_blocking(self._store_mask, ref, mask_key)
        visibility = judge(measures, settings.min_product_coverage)
        return _ProductCheck(ref, mask_key, visibility)

    def _stored_measures(self, mask_key: str) -> ProductMeasures | None:
        # One stat: a mask stored with its measures costs no download and no decode. One stored
        # before measures were recorded is made again (below), measures and all.
        try:
            return ProductMeasures.from_metadata(self.ctx.store.metadata(mask_key))
        except S3Error as exc:
            if is_missing(exc):
                return None
            raise

    def _store_mask(self, ref: PersistedReference, mask_key: str) -> ProductMeasures:
        # Masks are keyed by the image's digest: one mask per distinct product image, ever.
        # The bytes just downloaded, if this call downloaded them; storage only after a cache hit.
        data = ref.data if ref.data is not None else self.ctx.store.get_bytes(ref.key)
        image = _open_for_mask(data)
        product_mask = segment_product(image, self.segmenter)
        measures = measure_product(image, product_mask.image)
        mask = product_mask.image
        if mask.size != (ref.width, ref.height):
            # Segmented on a reduced decode: stored at the reference's own size, as every reader
            # of masks expects.
            mask = mask.resize((ref.width, ref.height), Image.Resampling.BILINEAR)
        buf = io.BytesIO()
        mask.save(buf, format="PNG")
        # How the mask was made (alpha, model, classical) travels with it, for lineage; the
        # measures let the next job citing this image be judged without decoding it.
        metadata = {"source-sha256": ref.sha256, "mask-source": product_mask.source, **measures.to_metadata()}
        self.ctx.store.put_bytes(mask_key, buf.getvalue(), formats.PNG, metadata)
        return measures


def _open_for_mask(data: bytes) -> Image.Image:
    """The image decoded at the smallest size the segmentation uses: a JPEG is decoded with DCT
    scaling (draft) straight to a reduced size, so a 6000 px photo never exists at full size here.
    Other formats decode in full (they cannot be decoded reduced)."""
    image = Image.open(io.BytesIO(data))
    target = _mask_work_size(image.size)
    if image.format == "JPEG" and target != image.size:
        image.draft("RGB", target)
    image.load()
    return image


def _mask_work_size(size: tuple[int, int]) -> tuple[int, int]:
    scale = min(1.0, DEFAULT_PARAMS.max_side / max(size))
    return (max(1, round(size[0] * scale)), max(1, round(size[1] * scale)))


def _mask_step_bytes(ref: PersistedReference) -> int:
    """What making a mask holds at its peak: the (possibly reduced) decode and its working
    copies, and the full-size mask with its PNG encoding."""
    full = (ref.width, ref.height)
    decoded = full
    if ref.content_type == formats.JPEG:
        # Pillow's JPEG draft: the largest scale of 1/2, 1/4, 1/8 that keeps the requested size.
        work = _mask_work_size(full)
        ratio = min(full[0] // work[0], full[1] // work[1])
        scale = next(s for s in (8, 4, 2, 1) if s <= max(1, ratio))
        decoded = (-(-full[0] // scale), -(-full[1] // scale))
    return 3 * decoded_bytes(decoded, "RGBA") + 2 * decoded_bytes(full, "L")


def _not_visible(check: _ProductCheck) -> DroppedReference:
    ref, visibility = check.ref, check.visibility
    reason, detail = REASON_PRODUCT_NOT_VISIBLE, visibility.detail
    return DroppedReference.for_url(ref.url, ref.role, ref.required, reason, detail, visibility.attributes())


def _drop_event(job: dict[str, Any], drop: DroppedReference) -> Event:
    # The URL goes to the event log (for SREs), never onto the job.
    return Event(
        job["job_id"],
        "dropped_reference",
        reason=drop.reason,
        detail=drop.detail[:500],
        attempt=int(job.get("attempt") or 0),
        discriminator=drop.url_sha256,
        attributes={
            "url": drop.url[:2048],
            "role": drop.role,
            "required": str(drop.required),
            **drop.attributes,
        },
    )


def _fail(job: dict[str, Any], failure: DroppedReference) -> Outcome:
    """A required reference that cannot be used (or the only product, optional or not) fails the
    job. A product that is not visible keeps its own reason; any other failure is a missing
    source file, detailed."""
    which = "required" if failure.required else "only"
    detail = f"{which} {failure.role} reference: {failure.reason}: {failure.detail}"[:1000]
    if failure.reason == REASON_PRODUCT_NOT_VISIBLE:
        return Outcome.fail(job, REASON_PRODUCT_NOT_VISIBLE, detail, **failure.attributes)
    return Outcome.fail(job, "missing_source_file", detail)
