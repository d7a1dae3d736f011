"""The review page: held assets with their scores and image, and the reviewer's decision.

Decisions go through the same code as `lightbox review`. MinIO's and Kafka's clients block, so
those calls run in a thread.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import quote

from aiohttp import web
from confluent_kafka import KafkaException
from minio.error import S3Error

from gateway.ops.entry import MAX_ID_CHARS, EntryError, check_review
from gateway.ops.review import submit_decision
from gateway.web.guards import MAX_BODY_BYTES, from_this_site
from gateway.web.resources import JOB_SERDE, PAGES, PRODUCER, SETTINGS, STORE
from gateway.web.responses import error, json_response
from processors.config import ReviewSettings
from processors.intake.fields import short
from processors.storage import ObjectStore
from processors.storage_keys import decided_key, pending_key, pending_prefix
from schemas.serde import AvroSerde, SerdeError

DECISIONS = ("approve", "reject")
MISSING_OBJECT = ("NoSuchKey", "NoSuchObject", "NotFound")

routes = web.RouteTableDef()


def _read_job(store: ObjectStore, serde: AvroSerde, key: str) -> dict[str, Any] | None:
    try:
        return serde.decode(store.get_bytes(key))
    except S3Error as exc:
        if exc.code in MISSING_OBJECT:
            return None
        raise


def _read_pending(store: ObjectStore, serde: AvroSerde, job_id: str, prefix: str) -> dict[str, Any] | None:
    return _read_job(store, serde, pending_key(job_id, prefix))


def _first_decision(job: dict[str, Any]) -> str:
    review = job.get("review") or {}
    text = f"{str(review.get('decision', 'decided')).lower()} by {review.get('reviewer') or 'unknown'}"
    return f"{text} ({review['reason']})" if review.get("reason") else text


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
            if exc.code not in MISSING_OBJECT:
                raise
    jobs.sort(key=lambda job: job["submitted_at"])
    return jobs, unreadable


def _image_type(data: bytes) -> str:
    # Sniffed from the bytes rather than trusted from the key or stored metadata.
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"


def _card(job: dict[str, Any]) -> dict[str, Any]:
    """What the review page shows for one held job."""
    spec, quality = job["spec"], job.get("quality") or {}
    generation, route = job.get("generation"), job.get("route")
    if generation:
        model = f"{generation['model']} ({generation['model_version']})"
    else:
        model = route["model"] if route else "unknown"
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
        "passed": quality.get("passed"),
        "scores": sorted((quality.get("scores") or {}).items()),
        "reasons": quality.get("reasons") or [],
        "image_url": f"/review/{quote(job['job_id'], safe='')}/image" if job.get("asset_key") else None,
        "action_url": f"/review/{quote(job['job_id'], safe='')}",
    }


async def _decision_fields(request: web.Request, as_json: bool) -> dict[str, str]:
    if as_json:
        body = json.loads(await request.read())
        if not isinstance(body, dict):
            raise ValueError("expected a JSON object with decision, reviewer and reason")
    else:
        body = dict(await request.post())
    return {name: str(body.get(name) or "").strip() for name in ("decision", "reviewer", "reason")}


def _decision_problem(fields: dict[str, str], review: ReviewSettings, job_id: str) -> EntryError | None:
    """What is wrong with the posted decision (field, what, and the limit when it is one)."""
    # Bounds first: a 1 MB field is refused without being echoed back or looked at further.
    try:
        check_review(review, job_id, fields["reviewer"], fields["reason"])
    except EntryError as exc:
        return exc
    if fields["decision"] not in DECISIONS:
        return EntryError("decision", f"must be approve or reject, not {short(fields['decision'])}")
    if not fields["reviewer"]:
        return EntryError("reviewer", "required: the lineage records who decided")
    if fields["decision"] == "reject" and not fields["reason"]:
        return EntryError("reason", "a rejection needs a reason")
    return None


@routes.get("/review")
async def review_page(request: web.Request) -> web.Response:
    prefix = request.app[SETTINGS].kafka.topic_prefix
    jobs, unreadable = await asyncio.to_thread(
        _load_pending, request.app[STORE], request.app[JOB_SERDE], prefix
    )
    html = (
        request.app[PAGES]
        .get_template("review.html")
        .render(
            cards=[_card(job) for job in jobs],
            unreadable=unreadable,
            decided=request.query.get("decided", "")[:MAX_ID_CHARS],
        )
    )
    return web.Response(text=html, content_type="text/html")


@routes.get("/review/{job_id}/image")
async def review_image(request: web.Request) -> web.Response:
    store, job_id = request.app[STORE], request.match_info["job_id"]
    prefix = request.app[SETTINGS].kafka.topic_prefix
    job = await asyncio.to_thread(_read_pending, store, request.app[JOB_SERDE], job_id, prefix)
    if job is None or not job.get("asset_key"):
        return error(404, f"job {job_id} has no image waiting for review")
    try:
        data = await asyncio.to_thread(store.get_bytes, job["asset_key"])
    except S3Error as exc:
        if exc.code not in MISSING_OBJECT:
            raise
        return error(404, f"job {job_id}'s image {job['asset_key']} is missing from storage")
    headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}
    return web.Response(body=data, content_type=_image_type(data), headers=headers)


@routes.post("/review/{job_id}")
async def post_decision(request: web.Request) -> web.Response:
    job_id = request.match_info["job_id"]
    as_json = request.content_type == "application/json"
    if not as_json and not from_this_site(request):
        return error(403, "decisions must be posted from this site's review page", as_json)
    try:
        fields = await _decision_fields(request, as_json)
    except web.HTTPRequestEntityTooLarge:
        return error(413, f"request body is over {MAX_BODY_BYTES} bytes", as_json)
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as exc:
        return error(400, f"request body is not a JSON object: {exc}", as_json)
    problem = _decision_problem(fields, request.app[SETTINGS].review, job_id)
    if problem:
        if as_json:
            return json_response({"error": str(problem), "field": problem.field, "limit": problem.limit}, 400)
        return error(400, str(problem), as_json)
    store = request.app[STORE]
    prefix = request.app[SETTINGS].kafka.topic_prefix
    # The first decision wins (the publish stage ignores later ones): say so instead of queueing
    # a decision that cannot take effect.
    decided = await asyncio.to_thread(_read_job, store, request.app[JOB_SERDE], decided_key(job_id, prefix))
    if decided is not None:
        return error(409, f"already decided: {_first_decision(decided)}", as_json)
    if not await asyncio.to_thread(store.exists, pending_key(job_id, prefix)):
        return error(404, f"job {job_id} is not waiting for review", as_json)
    decision, reviewer, reason = fields["decision"], fields["reviewer"], fields["reason"]
    try:
        await asyncio.to_thread(
            submit_decision,
            request.app[SETTINGS],
            job_id,
            decision.upper(),
            reviewer,
            reason,
            request.app[PRODUCER],
        )
    except (RuntimeError, KafkaException) as exc:
        return error(503, f"could not send the decision to Kafka: {exc}", as_json)
    if as_json:
        return json_response({"job_id": job_id, "decision": decision, "status": "submitted"}, 202)
    raise web.HTTPSeeOther(f"/review?decided={quote(job_id, safe='')}")
