"""The gateway's HTTP API and review page (aiohttp).

Upstream systems that cannot speak Kafka POST catalog events here; clients read a job's timeline
and the summary; creative reviewers approve or reject held assets. Every write goes through the
same code as the CLI (`lightbox submit`, `lightbox review`), so the two can never disagree on what
is valid. Kafka and MinIO clients block, so those calls run in a thread and one slow call never
stalls the other requests.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import jinja2
from aiohttp import web
from confluent_kafka import KafkaException
from minio.error import S3Error

from gateway.ops.review import submit_decision
from gateway.ops.submit import parse_lines, publish
from processors.config import Settings
from processors.eventlog.reader import EventLogReader, EventLogUnavailable
from processors.eventlog.server import host_name
from processors.storage import ObjectStore
from processors.storage_keys import decided_key, pending_key, pending_prefix
from schemas.serde import AvroSerde, SerdeError

MAX_BODY_BYTES = 5 * 1024 * 1024
DECISIONS = ("approve", "reject")
MISSING_OBJECT = ("NoSuchKey", "NoSuchObject", "NotFound")

# Host names a loopback-bound gateway answers to (besides the --host it was started with).
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})

SETTINGS = web.AppKey("settings", Settings)
BOUND_HOST = web.AppKey("bound_host", str)
STORE = web.AppKey("store", ObjectStore)
JOB_SERDE = web.AppKey("job_serde", AvroSerde)
PAGES = web.AppKey("pages", jinja2.Environment)

routes = web.RouteTableDef()
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def build_app(settings: Settings, host: str = "127.0.0.1") -> web.Application:
    """host: the address the gateway is bound to. Bound to loopback, it answers only requests
    whose Host header names loopback (or that address): a page on another site that rebinds its
    own name to 127.0.0.1 (DNS rebinding) sends that name as Host and is refused."""
    # aiohttp answers 413 itself once a body passes client_max_size, for JSON and forms alike.
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[_host_allowlist])
    app[SETTINGS] = settings
    app[BOUND_HOST] = host
    app[STORE] = ObjectStore(settings.storage)
    app[JOB_SERDE] = AvroSerde("job")
    app[PAGES] = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
        # Every field on the page is catalog or reviewer text: escape all of it, always.
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    app.add_routes(routes)
    return app


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8080) -> None:
    url = f"http://{host}:{port}"

    def announce(_: str) -> None:
        # run_app calls this only once the socket is bound, so the URL printed is one that works.
        print(f"Lightbox gateway on {url} (review page: {url}/review); Ctrl+C to stop", flush=True)

    web.run_app(build_app(settings, host), host=host, port=port, print=announce)


# --- helpers ---------------------------------------------------------------------------------


def _json(data: Any, status: int = 200) -> web.Response:
    # Timelines carry timestamps and ClickHouse values that json.dumps does not know.
    return web.json_response(data, status=status, dumps=functools.partial(json.dumps, default=str))


def _error(status: int, message: str, as_json: bool = True) -> web.Response:
    if as_json:
        return _json({"error": message}, status)
    return web.Response(status=status, text=message)


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


def _is_loopback(name: str) -> bool:
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@web.middleware
async def _host_allowlist(request: web.Request, handler: Handler) -> web.StreamResponse:
    bound = request.app[BOUND_HOST].strip("[]").lower()
    if _is_loopback(bound):
        name = host_name(request.headers.get("Host"))
        if name is None or not (_is_loopback(name) or name == bound):
            return _error(403, "this gateway answers only requests addressed to loopback (Host header)")
    return await handler(request)


def _same_origin(request: web.Request) -> bool:
    """Refuse decisions posted by another site's page in a reviewer's browser. Browsers send
    Origin on form posts; clients that send none (curl, scripts) are not a browser to abuse."""
    origin = request.headers.get("Origin")
    return origin is None or urlsplit(origin).netloc == request.host


async def _decision_fields(request: web.Request, as_json: bool) -> dict[str, str]:
    if as_json:
        body = json.loads(await request.read())
        if not isinstance(body, dict):
            raise ValueError("expected a JSON object with decision, reviewer and reason")
    else:
        body = dict(await request.post())
    return {name: str(body.get(name) or "").strip() for name in ("decision", "reviewer", "reason")}


def _decision_problem(fields: dict[str, str]) -> str | None:
    if fields["decision"] not in DECISIONS:
        return f"decision must be approve or reject, not {fields['decision']!r}"
    if not fields["reviewer"]:
        return "reviewer is required: the lineage records who decided"
    if fields["decision"] == "reject" and not fields["reason"]:
        return "a rejection needs a reason"
    return None


def _events_of(body: Any) -> list[Any]:
    if isinstance(body, dict) and "events" in body:
        events = body["events"]
        if not isinstance(events, list) or not events:
            raise ValueError("'events' must be a non-empty list of catalog events")
        return events
    if isinstance(body, dict):
        return [body]
    raise ValueError('expected one catalog event object or {"events": [...]}')


# --- routes ----------------------------------------------------------------------------------


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return _json({"ok": True})


@routes.post("/v1/events")
async def post_events(request: web.Request) -> web.Response:
    # JSON only: a cross-site form or no-cors fetch cannot send Content-Type application/json
    # without a CORS preflight, which this API never grants.
    if request.content_type != "application/json":
        return _error(415, "POST catalog events as Content-Type: application/json")
    if not _same_origin(request):
        return _error(403, "events may not be posted by another site's page")
    try:
        events = _events_of(json.loads(await request.read()))
    except web.HTTPRequestEntityTooLarge:
        return _error(413, f"request body is over {MAX_BODY_BYTES} bytes; send smaller batches")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return _error(400, f"request body is not JSON: {exc}")
    except ValueError as exc:
        return _error(400, str(exc))
    # One "line" per event, so parse_lines' line N is the event at index N-1: json.dumps never
    # yields the blank or "#" lines it skips.
    parsed = parse_lines(json.dumps(event) for event in events)
    if parsed.errors:
        errors = [{"index": error.line - 1, "message": error.message} for error in parsed.errors]
        return _json({"errors": errors}, 400)
    try:
        await asyncio.to_thread(publish, request.app[SETTINGS], parsed.events)
    except (RuntimeError, KafkaException) as exc:
        return _error(503, f"could not publish to Kafka: {exc}")
    event_ids = [event["event_id"] for _, event, _ in parsed.events]
    return _json({"accepted": len(event_ids), "event_ids": event_ids}, 202)


@routes.get("/v1/jobs/{job_id}")
async def get_job(request: web.Request) -> web.Response:
    job_id = request.match_info["job_id"]
    try:
        timeline = await EventLogReader(request.app[SETTINGS]).timeline(job_id)
    except EventLogUnavailable as exc:
        return _error(503, str(exc))
    if not timeline.get("events"):
        return _error(404, f"no events recorded for job {job_id}")
    return _json(timeline)


@routes.get("/v1/summary")
async def get_summary(request: web.Request) -> web.Response:
    try:
        since_ms = int(request.query.get("since_ms", "0"))
    except ValueError:
        return _error(400, "since_ms must be epoch milliseconds")
    try:
        return _json(await EventLogReader(request.app[SETTINGS]).summary(since_ms))
    except EventLogUnavailable as exc:
        return _error(503, str(exc))


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
            decided=request.query.get("decided", ""),
        )
    )
    return web.Response(text=html, content_type="text/html")


@routes.get("/review/{job_id}/image")
async def review_image(request: web.Request) -> web.Response:
    store, job_id = request.app[STORE], request.match_info["job_id"]
    prefix = request.app[SETTINGS].kafka.topic_prefix
    job = await asyncio.to_thread(_read_pending, store, request.app[JOB_SERDE], job_id, prefix)
    if job is None or not job.get("asset_key"):
        return _error(404, f"job {job_id} has no image waiting for review")
    try:
        data = await asyncio.to_thread(store.get_bytes, job["asset_key"])
    except S3Error as exc:
        if exc.code not in MISSING_OBJECT:
            raise
        return _error(404, f"job {job_id}'s image {job['asset_key']} is missing from storage")
    headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}
    return web.Response(body=data, content_type=_image_type(data), headers=headers)


@routes.post("/review/{job_id}")
async def post_decision(request: web.Request) -> web.Response:
    job_id = request.match_info["job_id"]
    as_json = request.content_type == "application/json"
    if not as_json and not _same_origin(request):
        return _error(403, "decisions must be posted from this site's review page", as_json)
    try:
        fields = await _decision_fields(request, as_json)
    except web.HTTPRequestEntityTooLarge:
        return _error(413, f"request body is over {MAX_BODY_BYTES} bytes", as_json)
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as exc:
        return _error(400, f"request body is not a JSON object: {exc}", as_json)
    problem = _decision_problem(fields)
    if problem:
        return _error(400, problem, as_json)
    store = request.app[STORE]
    prefix = request.app[SETTINGS].kafka.topic_prefix
    # The first decision wins (the publish stage ignores later ones): say so instead of queueing
    # a decision that cannot take effect.
    decided = await asyncio.to_thread(_read_job, store, request.app[JOB_SERDE], decided_key(job_id, prefix))
    if decided is not None:
        return _error(409, f"already decided: {_first_decision(decided)}", as_json)
    if not await asyncio.to_thread(store.exists, pending_key(job_id, prefix)):
        return _error(404, f"job {job_id} is not waiting for review", as_json)
    decision, reviewer, reason = fields["decision"], fields["reviewer"], fields["reason"]
    try:
        await asyncio.to_thread(
            submit_decision, request.app[SETTINGS], job_id, decision.upper(), reviewer, reason
        )
    except (RuntimeError, KafkaException) as exc:
        return _error(503, f"could not send the decision to Kafka: {exc}", as_json)
    if as_json:
        return _json({"job_id": job_id, "decision": decision, "status": "submitted"}, 202)
    raise web.HTTPSeeOther(f"/review?decided={quote(job_id, safe='')}")
