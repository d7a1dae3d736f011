"""The JSON API's writes: requests and events in, reviewers' decisions, replays, sessions.

Writes go through the same code as the CLI (`lightbox submit`, `review`, `replay`), so the two
can never disagree on what is valid. Kafka's and MinIO's clients block, so those calls run in a
thread and one slow call never stalls the other requests. Every route names the roles that may
call it (auth.require); the reviewer recorded on a decision is the caller's token name.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import time
from collections.abc import Callable
from typing import Any, TypeVar

import urllib3
from aiohttp import web
from confluent_kafka import KafkaException
from minio.error import MinioException

from gateway.ops.entry import (
    MAX_EVENTS_PER_REQUEST,
    MAX_LINE_CHARS,
    EntryError,
    check_id,
    check_review,
    intake_policy,
    template_store,
)
from gateway.ops.replay import ReplayError, replay_job
from gateway.ops.review import submit_decision
from gateway.ops.submit import ParsedFile, parse_lines, publish
from gateway.web.auth import Identity, Role, end_session, identity_of, login, require, start_session
from gateway.web.guards import MAX_BODY_BYTES
from gateway.web.idempotency import HEADER as IDEMPOTENCY_HEADER
from gateway.web.idempotency import REPLAYED_HEADER, IdempotencyStore, Remembered, body_digest, check_key
from gateway.web.jobs_api import read_record
from gateway.web.resources import CATALOG_SERDE, EVENT_LOG, JOB_SERDE, PRODUCER, SETTINGS, STORE
from gateway.web.responses import Problem, json_response
from processors.config import Settings
from processors.eventlog.reader import EventLogUnavailable
from processors.intake import validate_event
from processors.intake.fanout import fan_out
from processors.storage_keys import decided_key, pending_key
from processors.topology import JOB_STAGES
from schemas.serde import AvroSerde, SerdeError

routes = web.RouteTableDef()
T = TypeVar("T")

IDEMPOTENCY = web.AppKey("idempotency", IdempotencyStore)

ANY_ROLE = tuple(Role)
# One catalog event per POST /v1/requests: intake's limits keep a valid one far smaller.
MAX_REQUEST_BYTES = MAX_LINE_CHARS
DECISIONS = ("approve", "reject")
MAX_TOKEN_CHARS = 512


@functools.cache
def _catalog_serde() -> AvroSerde:
    return AvroSerde("catalog_event")


@functools.cache
def _record_paths() -> dict[str, str]:
    """Where each named record of the catalog event sits ("lightbox.catalog.Product" ->
    "product."), to turn the serde's "field 'lightbox.catalog.Product.sku'" into "product.sku"."""
    paths: dict[str, str] = {}

    def walk(avro: Any, path: str) -> None:
        if isinstance(avro, list):
            for member in avro:
                walk(member, path)
        elif isinstance(avro, dict):
            if avro.get("type") == "record":
                paths[avro["name"]] = path
                for avro_field in avro["fields"]:
                    walk(avro_field["type"], f"{path}{avro_field['name']}.")
            elif avro.get("type") == "array":
                walk(avro["items"], f"{path.rstrip('.')}[].")
            elif avro.get("type") == "map":
                walk(avro["values"], f"{path.rstrip('.')}{{}}.")

    walk(_catalog_serde().writer.parsed, "")
    return paths


_SERDE_FIELD = re.compile(r"field '([^']+)'")


def serde_field(message: str) -> str | None:
    """The event field a schema error names, as a dotted path; None when it names none."""
    match = _SERDE_FIELD.search(message)
    if not match:
        return None
    record, _, name = match.group(1).rpartition(".")
    prefix = _record_paths().get(record)
    return f"{prefix}{name}" if prefix is not None else match.group(1)


def request_job_ids(record: dict[str, Any]) -> list[str]:
    """The job ids intake will make of this (decoded, validated) catalog event. Fan-out is
    deterministic, so the answer is known before intake runs: the same computation as
    deploy/local/session.py expected_job_ids."""
    return [job["job_id"] for job in fan_out(record, 0, template_store().resolve_version)]


async def json_body(request: web.Request, max_bytes: int) -> Any:
    """The request's JSON body: 415 unless it is sent as application/json (a cross-site form or
    no-cors fetch cannot send that without a CORS preflight, which this API never grants), 413
    past max_bytes, 400 when it is not JSON."""
    if request.content_type != "application/json":
        raise Problem(415, "send the body as Content-Type: application/json", field="Content-Type")
    if request.content_length is not None and request.content_length > max_bytes:
        raise Problem(
            413, f"the body is {request.content_length} bytes; at most {max_bytes}", limit=max_bytes
        )
    raw = await request.read()
    if len(raw) > max_bytes:
        raise Problem(413, f"the body is {len(raw)} bytes; at most {max_bytes}", limit=max_bytes)
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise Problem(400, f"the body is not JSON: {str(exc)[:200]}") from None


def _object(body: Any, what: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise Problem(400, f"expected a JSON object ({what})")
    return body


def _entry_problem(exc: EntryError) -> Problem:
    return Problem(400, str(exc), field=exc.field, limit=exc.limit, kind="invalid-field")


async def _storage(call: Callable[..., T], *args: Any) -> T:
    """A blocking object-storage call in a thread; an outage is a 503, never a 500."""
    try:
        return await asyncio.to_thread(call, *args)
    except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
        raise Problem(503, f"object storage could not be reached: {str(exc)[:200]}") from None


async def _publish(request: web.Request, events: list[tuple[int, dict[str, Any], bytes]]) -> None:
    try:
        app = request.app
        await asyncio.to_thread(publish, app[SETTINGS], events, app[PRODUCER], app[CATALOG_SERDE])
    except (RuntimeError, KafkaException, OSError) as exc:  # OSError: the schema registry
        raise Problem(503, f"could not publish to Kafka: {exc}") from None


# -- requests ---------------------------------------------------------------------------------


def _parsed(lines: list[str]) -> ParsedFile:
    """parse_lines, with what it lets escape answered as a 400: a timestamp that fits the schema's
    long but no calendar (year 10000) fails only when the record is read back."""
    try:
        return parse_lines(lines, _catalog_serde())
    except (SerdeError, OverflowError, ValueError) as exc:
        raise Problem(400, f"an event does not fit the catalog_event schema: {str(exc)[:300]}") from None


def _validated(
    body: dict[str, Any], settings: Settings
) -> tuple[tuple[int, dict[str, Any], bytes], dict[str, Any]]:
    """The event ready to publish, and its record as intake will read it; Problem 400 when it does
    not fit the schema or intake's size limits, 422 when intake would reject it."""
    # The same checks as `lightbox submit`, one "line" for the event.
    parsed = _parsed([json.dumps(body)])
    if parsed.errors:
        (problem,) = parsed.errors
        raise Problem(400, problem.message, field=serde_field(problem.message), kind="invalid-field")
    (entry,) = parsed.events
    record = _catalog_serde().decode(entry[2])
    rejections = validate_event(record, intake_policy(), template_store(), settings.webhooks.allowed_hosts)
    if rejections:
        first = rejections[0]
        raise Problem(
            422,
            "; ".join(str(r) for r in rejections),
            field=first.field or None,
            kind="invalid-field",
            extra={
                "errors": [{"field": r.field, "reason": r.reason, "detail": r.detail} for r in rejections]
            },
        )
    return entry, record


async def _accept_request(request: web.Request, body: dict[str, Any]) -> dict[str, Any]:
    entry, record = _validated(body, request.app[SETTINGS])
    job_ids = request_job_ids(record)
    await _publish(request, [entry])
    return {
        "event_id": record["event_id"],
        "status": "accepted",
        "job_ids": job_ids,
        "jobs": [{"job_id": job_id, "href": f"/v1/jobs/{job_id}"} for job_id in job_ids],
    }


@routes.post("/v1/requests")
async def post_request(request: web.Request) -> web.Response:
    """One catalog event: validated as intake will, published, and answered at once (202) with
    the ids of the jobs it will make. Honours Idempotency-Key."""
    who = require(request, Role.SUBMITTER)
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is not None:
        check_key(key)
    body = _object(await json_body(request, MAX_REQUEST_BYTES), "one catalog event")
    if key is None:
        return json_response(await _accept_request(request, body), 202)
    store, digest = request.app[IDEMPOTENCY], body_digest(body)
    async with store.held(who.caller, key):
        remembered = await _storage(store.get, who.caller, key)
        if remembered is not None:
            if remembered.body_sha256 != digest:
                raise Problem(
                    422,
                    f"this {IDEMPOTENCY_HEADER} was used with another body; use a new key for a new request",
                    field=IDEMPOTENCY_HEADER,
                    kind="idempotency-key-reused",
                )
            return json_response(remembered.response, remembered.status, headers={REPLAYED_HEADER: "true"})
        answer = await _accept_request(request, body)
        remembered = Remembered(digest, 202, answer, int(time.time() * 1000))
        await _storage(store.put, who.caller, key, remembered)
    return json_response(answer, 202)


def _events_of(body: Any) -> list[Any]:
    if isinstance(body, dict) and "events" in body:
        events = body["events"]
        if not isinstance(events, list) or not events:
            raise Problem(400, "'events' must be a non-empty list of catalog events", field="events")
        if len(events) > MAX_EVENTS_PER_REQUEST:
            raise Problem(
                413,
                f"{len(events)} events in one request; at most {MAX_EVENTS_PER_REQUEST}: send fewer",
                field="events",
                limit=MAX_EVENTS_PER_REQUEST,
            )
        return events
    if isinstance(body, dict):
        return [body]
    raise Problem(400, 'expected one catalog event object or {"events": [...]}')


@routes.post("/v1/events")
async def post_events(request: web.Request) -> web.Response:
    """Catalog events in bulk, all or nothing, answered once Kafka has them (the older route;
    POST /v1/requests answers with job ids and honours Idempotency-Key)."""
    require(request, Role.SUBMITTER)
    events = _events_of(await json_body(request, MAX_BODY_BYTES))
    # One "line" per event, so parse_lines' line N is the event at index N-1: json.dumps never
    # yields the blank or "#" lines it skips.
    parsed = _parsed([json.dumps(event) for event in events])
    if parsed.errors:
        errors = [{"index": problem.line - 1, "detail": problem.message} for problem in parsed.errors]
        raise Problem(400, f"{len(errors)} invalid event(s); nothing was published", extra={"errors": errors})
    await _publish(request, parsed.events)
    event_ids = [event["event_id"] for _, event, _ in parsed.events]
    return json_response({"accepted": len(event_ids), "event_ids": event_ids}, 202)


# -- review decisions -------------------------------------------------------------------------


def first_decision(job: dict[str, Any]) -> str:
    review = job.get("review") or {}
    text = f"{str(review.get('decision', 'decided')).lower()} by {review.get('reviewer') or 'unknown'}"
    return f"{text} ({review['reason']})" if review.get("reason") else text


async def submit_review(
    app: web.Application, job_id: str, decision: str, reason: str, reviewer: Identity
) -> None:
    """Send a reviewer's decision on a held job: the one path for the JSON API and the review
    page's form. The reviewer recorded is `reviewer.name`. Problem 400 (a field over its limit,
    a rejection without a reason), 404 (not held), 409 (already decided: the first decision
    wins), 503 (Kafka)."""
    settings = app[SETTINGS]
    try:
        check_review(settings.review, job_id, reviewer.name, reason)
    except EntryError as exc:
        raise _entry_problem(exc) from None
    if decision not in DECISIONS:
        raise Problem(400, "decision must be approve or reject", field="decision", kind="invalid-field")
    if decision == "reject" and not reason.strip():
        raise Problem(400, "a rejection needs a reason", field="reason", kind="invalid-field")
    store, serde, prefix = app[STORE], app[JOB_SERDE], settings.kafka.topic_prefix
    decided = await _storage(read_record, store, serde, decided_key(job_id, prefix))
    if decided is not None:
        raise Problem(409, f"already decided: {first_decision(decided)}")
    if not await _storage(store.exists, pending_key(job_id, prefix)):
        raise Problem(404, f"job {job_id} is not waiting for review")
    try:
        await asyncio.to_thread(
            submit_decision, settings, job_id, decision.upper(), reviewer.name, reason.strip(), app[PRODUCER]
        )
    except (RuntimeError, KafkaException) as exc:
        raise Problem(503, f"could not send the decision to Kafka: {exc}") from None


@routes.post("/v1/jobs/{job_id}/decision")
async def post_decision(request: web.Request) -> web.Response:
    who = require(request, Role.REVIEWER)
    job_id = request.match_info["job_id"]
    body = _object(await json_body(request, 64 * 1024), '{"decision": "approve"|"reject", "reason": ...}')
    if unknown := sorted(set(body) - {"decision", "reason"}):
        what = "the reviewer is the caller's token name" if "reviewer" in unknown else "not a decision field"
        raise Problem(400, f"unexpected field {unknown[0]!r}: {what}", field=unknown[0], kind="invalid-field")
    decision, reason = body.get("decision"), body.get("reason", "")
    if not isinstance(decision, str):
        raise Problem(400, "decision must be approve or reject", field="decision", kind="invalid-field")
    if not isinstance(reason, str):
        raise Problem(400, "reason must be a string", field="reason", kind="invalid-field")
    await submit_review(request.app, job_id, decision, reason, who)
    return json_response(
        {"job_id": job_id, "decision": decision, "reviewer": who.name, "status": "submitted"}, 202
    )


# -- replay -----------------------------------------------------------------------------------


def _replay_blocking(
    settings: Settings, job_id: str, from_stage: str, model: str | None, backend: str | None
) -> tuple[str, str]:
    # The replay tool reads one record back from Kafka with a blocking consumer: it runs on a
    # loop of its own, in a thread, never on the gateway's.
    return asyncio.run(replay_job(settings, job_id, from_stage, model, backend))


@routes.post("/v1/jobs/{job_id}/replay")
async def post_replay(request: web.Request) -> web.Response:
    """Run a job again from a stage (optionally with another model): a new job, replay_of the
    original (gateway/ops/replay.py, the same as `lightbox replay`)."""
    require(request, Role.SRE)
    job_id = request.match_info["job_id"]
    body = _object(await json_body(request, 16 * 1024), '{"from_stage": ..., "model": ..., "backend": ...}')
    if unknown := sorted(set(body) - {"from_stage", "model", "backend"}):
        raise Problem(400, f"unexpected field {unknown[0]!r}", field=unknown[0], kind="invalid-field")
    from_stage = body.get("from_stage", "generate")
    if from_stage not in JOB_STAGES:
        raise Problem(
            400,
            f"from_stage must be one of {', '.join(JOB_STAGES)}",
            field="from_stage",
            kind="invalid-field",
        )
    options: dict[str, str | None] = {}
    for name in ("model", "backend"):
        value = body.get(name)
        if value is not None:
            try:
                value = check_id(value, name)
            except EntryError as exc:
                raise _entry_problem(exc) from None
        options[name] = value
    try:
        check_id(job_id, "job_id")
        timeline = await request.app[EVENT_LOG].timeline(job_id)
    except EntryError as exc:
        raise _entry_problem(exc) from None
    except EventLogUnavailable as exc:
        raise Problem(503, str(exc)) from None
    if not timeline.get("events"):
        raise Problem(404, f"no events recorded for job {job_id}")
    settings = request.app[SETTINGS]
    try:
        topic, new_job_id = await asyncio.to_thread(
            _replay_blocking, settings, job_id, from_stage, options["model"], options["backend"]
        )
    except ReplayError as exc:
        if "could not be delivered" in str(exc):
            raise Problem(503, str(exc)) from None
        raise Problem(409, str(exc)) from None
    except (EventLogUnavailable, KafkaException) as exc:
        raise Problem(503, str(exc)) from None
    answer = {"job_id": new_job_id, "replay_of": job_id, "from_stage": from_stage, "topic": topic, **options}
    return json_response({**answer, "href": f"/v1/jobs/{new_job_id}"}, 202)


# -- summary, sessions ------------------------------------------------------------------------


@routes.get("/v1/summary")
async def get_summary(request: web.Request) -> web.Response:
    require(request, *ANY_ROLE)
    raw = request.query.get("since_ms", "0")
    if not raw.isdigit() or len(raw) > 15:
        raise Problem(400, "since_ms must be epoch milliseconds", field="since_ms", kind="invalid-field")
    try:
        return json_response(await request.app[EVENT_LOG].summary(int(raw)))
    except EventLogUnavailable as exc:
        raise Problem(503, str(exc)) from None


@routes.get("/v1/whoami")
async def whoami(request: web.Request) -> web.Response:
    who = require(request, *ANY_ROLE)
    return json_response({"name": who.name, "role": str(who.role)})


@routes.post("/v1/session")
async def post_session(request: web.Request) -> web.Response:
    """Log a browser in with a token: sets the session cookie, answers the session's CSRF token."""
    body = _object(await json_body(request, 4096), '{"token": "lbx_..."}')
    token = body.get("token")
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
        raise Problem(400, "token must be an API token (lbx_...)", field="token", kind="invalid-field")
    identity = await login(request, token)
    response = web.Response(status=200, content_type="application/json")
    csrf = start_session(request, response, identity)
    response.text = json.dumps({"name": identity.name, "role": str(identity.role), "csrf_token": csrf})
    return response


@routes.delete("/v1/session")
async def delete_session(request: web.Request) -> web.Response:
    response = web.Response(status=204)
    if identity_of(request) is not None:
        end_session(request, response)
    return response
