"""The review page: held assets beside their stored product reference, with scores and reasons,
and the reviewer's decision.

Decisions go through the JSON API's path (api.submit_review, then gateway/ops/review.py, the
code `lightbox review` runs). The reviewer recorded is the logged-in identity's name, never a
field the client sends. A rejection names one of REJECT_REASONS, the one list of reason codes,
and may carry a note ("other" must). MinIO's and Kafka's clients block, so those calls run in a
thread.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from aiohttp import web
from minio.error import S3Error

from gateway.ops.entry import MAX_ID_CHARS, EntryError, check_id, check_review, check_text
from gateway.web.api import submit_review
from gateway.web.auth import require_form
from gateway.web.jobs_api import read_record
from gateway.web.pages import (
    REVIEWERS,
    STORAGE_ERRORS,
    PageError,
    page,
    page_identity,
    render,
    score_chips,
    storage_unavailable,
    stream_image,
)
from gateway.web.resources import JOB_SERDE, SETTINGS, STORE
from gateway.web.responses import Problem
from processors.config import ReviewSettings
from processors.intake.fields import short
from processors.references.images import product_reference
from processors.storage import ObjectStore, is_missing
from processors.storage_keys import decided_key, pending_key, pending_prefix
from schemas.serde import AvroSerde, SerdeError

DECISIONS = ("approve", "reject")

# Why a reviewer rejects an asset: code -> what the page shows. The code is what the decision
# records (as "<code>: <note>"), so reports can count rejections by it.
REJECT_REASONS: dict[str, str] = {
    "product_altered": "Product altered or distorted",
    "wrong_product": "Wrong product, colour or variant",
    "visual_artifacts": "Visual artifacts (blur, seams, noise)",
    "bad_text": "Text wrong or illegible",
    "off_brand": "Off brand (style, palette, logo use)",
    "composition": "Poor composition or cropping",
    "unsafe_content": "Unsafe or inappropriate content",
    "other": "Other (say why in the note)",
}
NOTE_REQUIRED = frozenset({"other"})

routes = web.RouteTableDef()


@dataclass(frozen=True)
class Decision:
    decision: str  # approve | reject
    reason_code: str
    note: str

    @property
    def reason(self) -> str:
        """What the decision records as its reason."""
        if self.decision == "reject":
            return f"{self.reason_code}: {self.note}" if self.note else self.reason_code
        return self.note


def note_max_chars(review: ReviewSettings) -> int:
    """The longest note that still fits review.max_reason_chars after any code and ': '."""
    return max(0, review.max_reason_chars - max(len(code) for code in REJECT_REASONS) - 2)


def decision_of(fields: dict[str, str], review: ReviewSettings, job_id: str, reviewer: str) -> Decision:
    """The posted decision, checked; Problem 400 naming the field otherwise. Bounds first: a
    1 MB field is refused without being echoed back or looked at further."""
    decision = Decision(fields["decision"], fields["reason_code"], fields["note"])
    try:
        # The note first, against its own bound: the recorded reason is "<code>: <note>".
        check_text(decision.note, "note", note_max_chars(review), "review.max_reason_chars less the code")
        check_review(review, job_id, reviewer, decision.reason)
    except EntryError as exc:
        raise Problem(400, str(exc), field=exc.field, limit=exc.limit, kind="invalid-field") from None
    if decision.decision not in DECISIONS:
        detail = f"decision must be approve or reject, not {short(decision.decision)}"
        raise Problem(400, detail, field="decision", kind="invalid-field")
    if decision.decision == "reject":
        if decision.reason_code not in REJECT_REASONS:
            detail = f"a rejection needs a reason code, one of: {', '.join(REJECT_REASONS)}"
            raise Problem(400, detail, field="reason_code", kind="invalid-field")
        if decision.reason_code in NOTE_REQUIRED and not decision.note:
            detail = f"a rejection for {decision.reason_code!r} needs a note saying why"
            raise Problem(400, detail, field="note", kind="invalid-field")
    return decision


def _load_pending(
    store: ObjectStore, serde: AvroSerde, prefix: str
) -> tuple[list[dict[str, Any]], list[str]]:
    """Held jobs, oldest first, and the keys that could not be read (shown, never hidden)."""
    jobs, unreadable = [], []
    for key in store.list_keys(pending_prefix(prefix)):
        try:
            jobs.append(serde.decode(store.get_bytes(key)))
        except SerdeError:
            unreadable.append(key)
        except S3Error as exc:
            # Gone between the listing and the read: decided meanwhile, nothing to show.
            if not is_missing(exc):
                raise
    jobs.sort(key=lambda job: job["submitted_at"])
    return jobs, unreadable


def job_url(job_id: str) -> str:
    return f"/jobs/{quote(job_id, safe='')}"


def _card(job: dict[str, Any]) -> dict[str, Any]:
    """What the review page shows for one held job."""
    spec, quality = job["spec"], job.get("quality") or {}
    generation, route = job.get("generation"), job.get("route")
    if generation:
        model = f"{generation['model']} ({generation['model_version']})"
    else:
        model = route["model"] if route else "unknown"
    reference = product_reference(job)
    base = f"/review/{quote(job['job_id'], safe='')}"
    return {
        "job_id": job["job_id"],
        "sku": job["product"]["sku"],
        "title": job["product"]["title"],
        "brand": job["product"]["brand"],
        "slot": " · ".join(
            (spec["asset_type"], spec["channel"], spec["locale"], f"{spec['width']}×{spec['height']}")
        ),
        "template": f"{spec['template_id']} {spec['template_version'] or ''}".strip(),
        "model": model,
        "attempt": job.get("attempt", 0),
        "variants": len(generation["output_keys"]) if generation else 0,
        "passed": quality.get("passed"),
        "scores": score_chips(quality.get("scores") or {}),
        "reasons": quality.get("reasons") or [],
        "image_url": f"{base}/image" if job.get("asset_key") else None,
        "reference_url": f"{base}/reference" if reference else None,
        "reference_size": f"{reference['width']}×{reference['height']}" if reference else "",
        "action_url": base,
        "job_url": job_url(job["job_id"]),
    }


@routes.get("/review")
@page
async def review_page(request: web.Request) -> web.Response:
    page_identity(request, *REVIEWERS)
    settings = request.app[SETTINGS]
    try:
        jobs, unreadable = await asyncio.to_thread(
            _load_pending, request.app[STORE], request.app[JOB_SERDE], settings.kafka.topic_prefix
        )
    except STORAGE_ERRORS as exc:
        raise storage_unavailable(exc) from None
    decided = request.query.get("decided", "")[:MAX_ID_CHARS]
    return render(
        request,
        "review.html",
        # The job just decided is not shown again while the publish stage takes it out of the queue.
        cards=[_card(job) for job in jobs if job["job_id"] != decided],
        unreadable=unreadable,
        decided=decided,
        decided_url=job_url(decided) if decided else "",
        reject_reasons=list(REJECT_REASONS.items()),
        note_max=note_max_chars(settings.review),
    )


def _held_or_decided(store: ObjectStore, serde: AvroSerde, job_id: str, prefix: str) -> dict[str, Any] | None:
    # Decided too: a page listed a job a moment before a decision moved it, and its images
    # still load.
    for key in (pending_key(job_id, prefix), decided_key(job_id, prefix)):
        if (job := read_record(store, serde, key)) is not None:
            return job
    return None


async def _reviewed_job(request: web.Request) -> dict[str, Any]:
    job_id = request.match_info["job_id"]
    try:
        check_id(job_id, "job_id")
    except EntryError as exc:
        raise PageError(400, "Not a job id", str(exc)) from None
    prefix = request.app[SETTINGS].kafka.topic_prefix
    store, serde = request.app[STORE], request.app[JOB_SERDE]
    try:
        job = await asyncio.to_thread(_held_or_decided, store, serde, job_id, prefix)
    except (*STORAGE_ERRORS, SerdeError) as exc:
        raise storage_unavailable(exc) from None
    if job is None:
        raise PageError(404, "Not in review", f"job {job_id} is neither waiting for review nor decided")
    return job


@routes.get("/review/{job_id}/image")
@page
async def review_image(request: web.Request) -> web.StreamResponse:
    page_identity(request, *REVIEWERS)
    job = await _reviewed_job(request)
    if not job.get("asset_key"):
        raise PageError(404, "No image", f"job {job['job_id']} has no generated image")
    return await stream_image(request, job["asset_key"], f"job {job['job_id']}'s generated image")


@routes.get("/review/{job_id}/reference")
@page
async def review_reference(request: web.Request) -> web.StreamResponse:
    page_identity(request, *REVIEWERS)
    job = await _reviewed_job(request)
    reference = product_reference(job)
    if reference is None:
        raise PageError(404, "No product reference", f"job {job['job_id']} has no stored product reference")
    return await stream_image(request, reference["key"], f"job {job['job_id']}'s product reference")


@routes.post("/review/{job_id}")
async def post_decision(request: web.Request) -> web.StreamResponse:
    """The review page's form: 303 back to the page once Kafka has the decision. Reviewers (and
    admins) only, the CSRF token checked, the identity's name recorded. JSON clients decide
    through POST /v1/jobs/{job_id}/decision (api.py); both send through api.submit_review."""
    if request.content_type == "application/json":
        job_id = request.match_info["job_id"]
        detail = f"the review page posts forms; send JSON decisions to POST /v1/jobs/{job_id}/decision"
        raise Problem(415, detail)
    return await _post_decision_form(request)


@page
async def _post_decision_form(request: web.Request) -> web.StreamResponse:
    job_id = request.match_info["job_id"]
    identity, form = await require_form(request, *REVIEWERS)
    fields = {name: str(form.get(name) or "").strip() for name in ("decision", "reason_code", "note")}
    try:
        decision = decision_of(fields, request.app[SETTINGS].review, job_id, identity.name)
        await submit_review(request.app, job_id, decision.decision, decision.reason, identity)
    except Problem as exc:
        raise PageError(exc.status, "Decision not sent", exc.detail, back_url="/review") from None
    raise web.HTTPSeeOther(f"/review?decided={quote(job_id, safe='')}")
