"""quality: generation.results → assets.scored, or back to generation.requests.

Scores every variant (decodes, asked size, not blank, product preserved against the stored
reference and its mask), keeps the best, and records every score on the job. Below threshold the
job is sent back for another attempt with a new seed, up to a limit; then it is routed to human
review or failed, as configured. A product missing from the reference is never retried (no seed
can add it): it goes straight to review or failure.

The job names the image it kept: `asset_key` is the exact key scored, and generated keys carry
their image's sha256 (each read is checked against it), so what postprocess renders is the pixels
that were scored, whatever a redone generate batch wrote since. Storage failures follow the one
rule (processors/storage.py): a missing or changed image or product fails the job with its reason
and is dead-lettered; an outage is raised, so the runtime retries. A job attempt is judged
once: a second result for it (a copy from a redone generate batch, at another offset) is a
`duplicate_job`, so no other image of that attempt is scored and rendered after the first.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections import OrderedDict
from typing import Any, ClassVar

from PIL import Image

from processors.imaging import formats
from processors.imaging.checks import (
    REASON_PRODUCT_MISSING,
    REASON_PRODUCT_NOT_PRESERVED,
    ImageCheckError,
    QualityThresholds,
    check_output,
    decode_image,
    failed_reasons,
    preservation_scores,
)
from processors.imaging.ocr import OcrUnavailable, text_match_score
from processors.imaging.preservation import ProductRegion, product_region
from processors.intake import text_or_none
from processors.references.images import ReferenceImages, product_reference
from processors.runtime import InputRecord, Outcome, Output, Stage
from processors.runtime.keyed_locks import KeyedLocks
from processors.runtime.records import job_event
from processors.storage import ObjectFault, storage_errors
from processors.storage_keys import generated_digest, handled_key
from schemas.topics import Topic

# Product regions kept (with the templates resized from them): the jobs of one product, its
# channels and locales and retries, come close together.
REGIONS_KEPT = 8

# Reasons another attempt cannot cure: the product is missing from the reference itself, so a new
# seed cannot put it in the picture. Such a job goes straight to what exhausted attempts lead to.
NOT_RETRIED = frozenset({REASON_PRODUCT_MISSING})


class QualityStage(Stage):
    name: ClassVar[str] = "quality"
    inputs: ClassVar[tuple[Topic, ...]] = (Topic.GENERATION_RESULTS,)
    outputs: ClassVar[tuple[Topic, ...]] = (Topic.ASSETS_SCORED, Topic.GENERATION_REQUESTS)
    # CPU-bound scoring: up to 8 records a batch (Stage.max_batch; each batch is a Kafka
    # transaction, 2-3 ms of broker CPU whatever it carries), one at a time: two threads of this
    # search in one process cost 8-36% more CPU per output than one (the GIL and the cores'
    # caches; docs/benchmarks.md), and where the cores are the limit that is throughput lost.
    # More processes (`--copies quality=N`) scale it instead.
    max_batch: ClassVar[int] = 8
    concurrency: ClassVar[int] = 1

    async def start(self) -> None:
        formats.load_codecs()
        self.reference_images = ReferenceImages(
            self.ctx.store, max_bytes=self.ctx.settings.references.decoded_cache_bytes
        )
        self._regions: OrderedDict[tuple[str, str], ProductRegion] = OrderedDict()
        self._regions_lock = threading.Lock()
        # Two copies of one job in one batch: the second waits, then finds the first's claim.
        self.claims = KeyedLocks()
        settings = self.ctx.settings.quality
        # One set of thresholds, from configuration, for the one verdict (checks.failed_reasons).
        self.thresholds = QualityThresholds.from_settings(settings)
        self.clip = None
        if settings.clip_model:
            from processors.imaging.clip_score import ClipScorer

            self.clip = ClipScorer.from_local(settings.clip_model, settings.clip_checkpoint)

    async def handle(self, record: InputRecord) -> Outcome:
        job = record.value
        source = f"{record.topic.value}/{record.partition}/{record.offset}"
        claim = handled_key(
            self.name, job["job_id"], self.ctx.settings.kafka.topic_prefix, int(job.get("attempt") or 0)
        )
        try:
            with storage_errors():
                async with self.claims.hold(claim):
                    first = await self.run_blocking(self.ctx.store.claimant, claim)
                    if first is not None and first != source:
                        return _already_scored(job, first)
                    verdicts = await self.run_blocking(self._score_all, job)
                    outcome = self._verdict(job, verdicts)
                    await self.run_blocking(self.ctx.store.claim, claim, source)
        except ObjectFault as exc:
            event = job_event(job, "failed", reason=exc.reason, detail=str(exc)[:500])
            return Outcome(events=[event], dead_letter=exc)
        return outcome

    def _verdict(self, job: dict[str, Any], verdicts: list[tuple[dict[str, float], list[str]]]) -> Outcome:
        best_index = max(
            range(len(verdicts)), key=lambda i: (not verdicts[i][1], verdicts[i][0].get("overall", 0))
        )
        scores, reasons = verdicts[best_index]
        passed = not reasons
        job["quality"] = {"passed": passed, "scores": scores, "reasons": reasons, "chosen_index": best_index}
        job["asset_key"] = job["generation"]["output_keys"][best_index]
        attributes = {f"score.{k}": f"{v:.4f}" for k, v in scores.items()}
        attributes["variants"] = str(len(verdicts))
        # Candidates the gate turned down, for the first-pass artifact rate (docs/analytics.md).
        attributes["rejected_variants"] = str(sum(1 for _, failed in verdicts if failed))
        attributes["asset_key"] = job["asset_key"]
        if passed:
            return Outcome.forward(Topic.ASSETS_SCORED, job, "completed", **attributes)

        settings = self.ctx.settings.quality
        reason = reasons[0]
        retriable = not NOT_RETRIED.intersection(reasons)
        if retriable and int(job.get("attempt") or 0) + 1 < settings.max_attempts:
            retry = dict(job)
            retry["attempt"] = int(job.get("attempt") or 0) + 1
            retry["route"] = {**job["route"], "params": _adjusted(job["route"]["params"], reason)}
            retry["route"]["params"].pop("seed", None)  # a new attempt gets a new seed
            retry["generation"] = None
            retry["quality"] = None
            retry["asset_key"] = None
            event = job_event(job, "retry", reason=reason, detail="; ".join(reasons), attributes=attributes)
            return Outcome(outputs=[Output(Topic.GENERATION_REQUESTS, job["job_id"], retry)], events=[event])
        if settings.on_exhausted == "review":
            # Scored output goes on, flagged; the review stage holds a failed verdict whatever its policy.
            attributes["needs_review"] = "true"
            return Outcome.forward(Topic.ASSETS_SCORED, job, "completed", **attributes)
        return Outcome.fail(job, "quality_rejection", "; ".join(reasons), **attributes)

    def _score_all(self, job: dict[str, Any]) -> list[tuple[dict[str, float], list[str]]]:
        product, mask, region = self._reference(job)
        return [self._score(key, job, product, mask, region) for key in job["generation"]["output_keys"]]

    def _reference(
        self, job: dict[str, Any]
    ) -> tuple[Image.Image | None, Image.Image | None, ProductRegion | None]:
        ref = product_reference(job)
        if ref is None or not ref.get("mask_key"):
            return None, None, None
        product, mask = self.reference_images.product(ref), self.reference_images.mask(ref)
        if mask is None:
            return product, None, None
        # Keys are content-addressed: the same keys are the same pixels. One region per product,
        # the first made: whatever threads score its outputs share the templates kept on it.
        name = (str(ref["key"]), str(ref["mask_key"]))
        with self._regions_lock:
            region = self._regions.get(name)
            if region is not None:
                self._regions.move_to_end(name)
                return product, mask, region
        computed = product_region(product, mask)
        with self._regions_lock:
            region = self._regions.setdefault(name, computed)
            self._regions.move_to_end(name)
            while len(self._regions) > REGIONS_KEPT:
                self._regions.popitem(last=False)
        return product, mask, region

    def _score(
        self,
        key: str,
        job: dict[str, Any],
        product: Image.Image | None,
        mask: Image.Image | None,
        region: ProductRegion | None = None,
    ) -> tuple[dict[str, float], list[str]]:
        settings = self.ctx.settings.quality
        spec = job["spec"]
        try:
            data = self.ctx.store.get_checked(key, generated_digest(key))
            image = decode_image(data, settings.max_pixels)
        except ImageCheckError as exc:
            return {"decodes": 0.0, "overall": 0.0}, [exc.reason]
        scores = {"decodes": 1.0, **check_output(image, spec["width"], spec["height"])}
        # Preservation is always required: with no stored product reference or mask to compare
        # against it is unscored, and an unscored check never passes silently (retried, then
        # reviewed). So is the text of a job that carries one, when OCR is on.
        required = ["preservation"]
        if product is not None and mask is not None:
            scores.update(preservation_scores(image, product, mask, region))
        if self.clip is not None:
            scores["clip_score"] = self.clip.score(image, job["prompt"]["positive"])
        text = text_or_none(spec.get("text_overlay"))
        if text and settings.ocr_for_text:
            required.append("ocr_score")
            # Tesseract missing here: the score stays unmeasured and a person must look.
            with contextlib.suppress(OcrUnavailable):
                scores["ocr_score"] = text_match_score(text, image)
        reasons = failed_reasons(scores, self.thresholds, required=required)
        scores["overall"] = _overall(scores)
        return {k: float(v) for k, v in scores.items()}, reasons


def _already_scored(job: dict[str, Any], first: str) -> Outcome:
    """Another result for a job attempt quality already judged (a redone generate batch made a
    second one, maybe of other pixels): the first verdict stands, and what it scored is what
    goes on; this copy stops here."""
    detail = f"attempt {job.get('attempt') or 0} was scored from {first}; this copy changes nothing"
    return Outcome(events=[job_event(job, "duplicate_job", reason="already_scored", detail=detail)])


def _overall(scores: dict[str, float]) -> float:
    """What picks the best variant: preservation times non-blankness. A NaN part counts as the
    worst (0), so an unmeasurable variant never outranks a measured one."""
    parts = (scores.get("preservation", 1.0), 1.0 - scores.get("blank_score", 0.0))
    return 0.0 if any(math.isnan(p) for p in parts) else parts[0] * parts[1]


def _adjusted(params: dict[str, str], reason: str) -> dict[str, str]:
    """A retry's parameters: more steps for a weak result, stronger guidance if the product was lost."""
    adjusted = dict(params)
    if "steps" in adjusted:
        adjusted["steps"] = str(min(60, int(adjusted["steps"]) + 5))
    if reason == REASON_PRODUCT_NOT_PRESERVED and "guidance" in adjusted:
        adjusted["guidance"] = f"{min(12.0, float(adjusted['guidance']) + 1.0):.1f}"
    return adjusted
