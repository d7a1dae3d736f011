"""The JSON API: catalog events in, a job's timeline and the summary out.

Writes go through the same code as the CLI (`lightbox submit`), so the two can never disagree on
what is valid. Kafka's client blocks, so producing runs in a thread and one slow call never stalls
the other requests.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web
from confluent_kafka import KafkaException

from gateway.ops.entry import MAX_EVENTS_PER_REQUEST, EntryError, check_id
from gateway.ops.submit import parse_lines, publish
from gateway.web.guards import MAX_BODY_BYTES, from_this_site
from gateway.web.resources import EVENT_LOG, PRODUCER, SETTINGS
from gateway.web.responses import error, json_response
from processors.eventlog.reader import EventLogUnavailable

routes = web.RouteTableDef()


class TooManyEvents(ValueError):
    """More events in one request than MAX_EVENTS_PER_REQUEST (answered 413)."""


def _events_of(body: Any) -> list[Any]:
    if isinstance(body, dict) and "events" in body:
        events = body["events"]
        if not isinstance(events, list) or not events:
            raise ValueError("'events' must be a non-empty list of catalog events")
        if len(events) > MAX_EVENTS_PER_REQUEST:
            raise TooManyEvents(
                f"{len(events)} events in one request; at most {MAX_EVENTS_PER_REQUEST}: send smaller batches"
            )
        return events
    if isinstance(body, dict):
        return [body]
    raise ValueError('expected one catalog event object or {"events": [...]}')


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return json_response({"ok": True})


@routes.post("/v1/events")
async def post_events(request: web.Request) -> web.Response:
    # JSON only: a cross-site form or no-cors fetch cannot send Content-Type application/json
    # without a CORS preflight, which this API never grants.
    if request.content_type != "application/json":
        return error(415, "POST catalog events as Content-Type: application/json")
    if not from_this_site(request):
        return error(403, "events may not be posted by another site's page")
    try:
        events = _events_of(json.loads(await request.read()))
    except web.HTTPRequestEntityTooLarge:
        return error(413, f"request body is over {MAX_BODY_BYTES} bytes; send smaller batches")
    except TooManyEvents as exc:
        return error(413, str(exc))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return error(400, f"request body is not JSON: {exc}")
    except ValueError as exc:
        return error(400, str(exc))
    # One "line" per event, so parse_lines' line N is the event at index N-1: json.dumps never
    # yields the blank or "#" lines it skips.
    parsed = parse_lines(json.dumps(event) for event in events)
    if parsed.errors:
        errors = [{"index": problem.line - 1, "message": problem.message} for problem in parsed.errors]
        return json_response({"errors": errors}, 400)
    try:
        await asyncio.to_thread(publish, request.app[SETTINGS], parsed.events, request.app[PRODUCER])
    except (RuntimeError, KafkaException) as exc:
        return error(503, f"could not publish to Kafka: {exc}")
    event_ids = [event["event_id"] for _, event, _ in parsed.events]
    return json_response({"accepted": len(event_ids), "event_ids": event_ids}, 202)


@routes.get("/v1/jobs/{job_id}")
async def get_job(request: web.Request) -> web.Response:
    job_id = request.match_info["job_id"]
    try:
        check_id(job_id, "job_id")
    except EntryError as exc:
        return json_response({"error": str(exc), "field": exc.field, "limit": exc.limit}, 400)
    try:
        timeline = await request.app[EVENT_LOG].timeline(job_id)
    except EventLogUnavailable as exc:
        return error(503, str(exc))
    if not timeline.get("events"):
        return error(404, f"no events recorded for job {job_id}")
    return json_response(timeline)


@routes.get("/v1/summary")
async def get_summary(request: web.Request) -> web.Response:
    try:
        since_ms = int(request.query.get("since_ms", "0"))
    except ValueError:
        return error(400, "since_ms must be epoch milliseconds")
    try:
        return json_response(await request.app[EVENT_LOG].summary(since_ms))
    except EventLogUnavailable as exc:
        return error(503, str(exc))
