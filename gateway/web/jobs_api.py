"""The JSON API's job reads: GET /v1/jobs (filtered, cursor-paged) and GET /v1/jobs/{job_id}
(state, timeline, scores, full lineage and the job's files as time-limited presigned URLs).

The list and the timeline come from the event log (processors/eventlog/reader.py, never on the
event loop); the lineage is the job record the pipeline stored: the published lineage document
once the job is published, else the held record of the review queue.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import json
from typing import Any

import urllib3
from aiohttp import web
from minio import Minio
from minio.error import MinioException, S3Error

from gateway.ops.entry import EntryError, check_id
from gateway.web.auth import Role, require
from gateway.web.resources import EVENT_LOG, JOB_SERDE, PRESIGNER, SETTINGS, STORE
from gateway.web.responses import Problem, json_response
from processors.config import Settings
from processors.eventlog.queries import MAX_JOB_PAGE, JobFilter
from processors.eventlog.reader import EventLogUnavailable
from processors.job_states import LIFECYCLE
from processors.provenance.keys import trust_anchors_of
from processors.provenance.verify import verify_bytes
from processors.storage import ObjectStore, is_missing
from processors.storage_keys import LINEAGE_FILENAME, decided_key, pending_key
from schemas.serde import AvroSerde, SerdeError

routes = web.RouteTableDef()

READERS = tuple(Role)
LIST_PARAMS = ("state", "sku", "campaign", "template", "model", "since", "until", "limit", "cursor")
DEFAULT_PAGE = 50
# States after which the publish stage keeps a record of the job in the review queue.
REVIEW_STATES = frozenset({"in_review", "approved", "rejected", "already_decided", "decision_ignored"})
MAX_CURSOR_CHARS = 512


def _bad(name: str, detail: str) -> Problem:
    return Problem(400, f"{name}: {detail}", field=name, kind="invalid-field")


def encode_cursor(after: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(after).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    """The page key an opaque cursor carries; Problem 400 for anything this API did not make."""
    if len(cursor) > MAX_CURSOR_CHARS:
        raise _bad("cursor", "not a cursor this API made")
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error, RecursionError):
        raise _bad("cursor", "not a cursor this API made") from None
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not isinstance(value[0], int)
        or isinstance(value[0], bool)
        or not isinstance(value[1], str)
    ):
        raise _bad("cursor", "not a cursor this API made")
    return value[0], value[1]


def parse_time(name: str, value: str) -> int:
    """Epoch milliseconds, or an ISO-8601 time (UTC unless it says otherwise)."""
    if value.isdigit() and len(value) <= 15:
        return int(value)
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _bad(name, "epoch milliseconds or an ISO-8601 time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return int(parsed.timestamp() * 1000)


def job_filter(query: Any) -> JobFilter:
    """GET /v1/jobs's query string as a filter; Problem 400 naming the parameter that is wrong."""
    if unknown := sorted(set(query) - set(LIST_PARAMS)):
        raise _bad(unknown[0], f"not a parameter of GET /v1/jobs (known: {', '.join(LIST_PARAMS)})")
    for name in query:
        if len(query.getall(name)) > 1:
            raise _bad(name, "given more than once")
    values: dict[str, Any] = {}
    for name in ("sku", "campaign", "template", "model"):
        if name in query:
            try:
                values[name] = check_id(query[name], name)
            except EntryError as exc:
                raise Problem(400, str(exc), field=name, limit=exc.limit, kind="invalid-field") from None
    if "state" in query:
        if query["state"] not in LIFECYCLE:
            raise _bad("state", f"one of {', '.join(LIFECYCLE)}")
        values["state"] = query["state"]
    if "since" in query:
        values["since_ms"] = parse_time("since", query["since"])
    if "until" in query:
        values["until_ms"] = parse_time("until", query["until"])
    limit = query.get("limit", str(DEFAULT_PAGE))
    if not limit.isdigit() or not 1 <= int(limit) <= MAX_JOB_PAGE:
        raise _bad("limit", f"an integer from 1 to {MAX_JOB_PAGE}")
    values["limit"] = int(limit)
    if "cursor" in query:
        values["after"] = decode_cursor(query["cursor"])
    return JobFilter(**values)


@routes.get("/v1/jobs")
async def list_jobs(request: web.Request) -> web.Response:
    require(request, *READERS)
    filters = job_filter(request.query)
    try:
        page = await request.app[EVENT_LOG].list_jobs(filters)
    except EventLogUnavailable as exc:
        raise Problem(503, str(exc)) from None
    after = page.get("next")
    jobs = [{**job, "href": f"/v1/jobs/{job['job_id']}"} for job in page["jobs"]]
    return json_response({"jobs": jobs, "next_cursor": encode_cursor(after) if after else None})


# -- one job ----------------------------------------------------------------------------------


def _attribute(events: list[dict[str, Any]], name: str) -> str | None:
    for event in events:
        value = (event.get("attributes") or {}).get(name)
        if value:
            return str(value)
    return None


def scores_of(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every quality verdict of the job, in order: each attempt's scores and whether it passed."""
    verdicts = []
    for event in events:
        if event.get("stage") != "quality":
            continue
        attributes = event.get("attributes") or {}
        scores = {k.removeprefix("score."): float(v) for k, v in attributes.items() if k.startswith("score.")}
        if not scores:
            continue
        verdicts.append(
            {
                "attempt": event.get("attempt", 0),
                "at": event.get("at"),
                "state": event.get("state"),
                "passed": event.get("state") == "completed" and attributes.get("needs_review") != "true",
                "reason": event.get("reason") or None,
                "scores": scores,
                "asset_key": attributes.get("asset_key"),
            }
        )
    return verdicts


def _get_json(store: ObjectStore, key: str) -> dict[str, Any] | None:
    try:
        document = json.loads(store.get_bytes(key))
    except S3Error as exc:
        if is_missing(exc):
            return None
        raise
    return document if isinstance(document, dict) else None


def read_record(store: ObjectStore, serde: AvroSerde, key: str) -> dict[str, Any] | None:
    """A stored job record (the review queue's held and decided jobs); None when there is none.
    Blocking; SerdeError for bytes that are not one."""
    try:
        return serde.decode(store.get_bytes(key))
    except S3Error as exc:
        if is_missing(exc):
            return None
        raise


def stored_record(
    store: ObjectStore, serde: AvroSerde, job_id: str, events: list[dict[str, Any]], topic_prefix: str
) -> tuple[str | None, dict[str, Any] | None]:
    """(where it came from, the job record): the published lineage document, else the decided or
    held record of the review queue; (None, None) for a job still on its way."""
    published = next((e for e in reversed(events) if e.get("state") == "published"), None)
    prefix = ((published or {}).get("attributes") or {}).get("prefix")
    if prefix:
        document = _get_json(store, f"{prefix}/{LINEAGE_FILENAME}")
        if document is not None:
            return "published", document
    if not REVIEW_STATES.intersection(e.get("state") for e in events):
        return None, None  # never reached review: nothing of it is stored yet
    for where, key in (
        ("decided", decided_key(job_id, topic_prefix)),
        ("held", pending_key(job_id, topic_prefix)),
    ):
        try:
            record = read_record(store, serde, key)
        except SerdeError:
            continue  # unreadable: the next place may hold it
        if record is not None:
            record.pop("source_references", None)  # the catalog's URLs: not the pipeline's files
            return where, record
    return None, None


def published_files(store: ObjectStore, events: list[dict[str, Any]]) -> list[str]:
    """Every file under the job's published prefix (the lineage document is written before the
    record learns its published keys, so the listing, not the record, is the full set)."""
    published = next((e for e in reversed(events) if e.get("state") == "published"), None)
    prefix = ((published or {}).get("attributes") or {}).get("prefix")
    return sorted(store.list_keys(f"{prefix}/")) if prefix else []


def asset_keys(
    record: dict[str, Any] | None, events: list[dict[str, Any]], published: list[str]
) -> list[tuple[str, str]]:
    """(role, storage key) of every file the job has: published files once it is published, else
    its chosen generated image and derivatives."""
    if published:
        return [("published", key) for key in published]
    keys: list[tuple[str, str]] = []
    generated = (record or {}).get("asset_key") or _latest_asset_key(events)
    if generated:
        keys.append(("generated", generated))
    for derivative in (record or {}).get("derivatives") or []:
        if derivative.get("key"):
            keys.append(("derivative", derivative["key"]))
    return keys


def _latest_asset_key(events: list[dict[str, Any]]) -> str | None:
    for event in reversed(events):
        key = (event.get("attributes") or {}).get("asset_key")
        if key:
            return str(key)
    return None


def presigned(client: Minio, bucket: str, keys: list[tuple[str, str]], ttl_s: int) -> list[dict[str, Any]]:
    expires = dt.timedelta(seconds=ttl_s)
    until = (dt.datetime.now(dt.UTC) + expires).isoformat()
    return [
        {
            "role": role,
            "key": key,
            "url": client.presigned_get_object(bucket, key, expires=expires),
            "expires_at": until,
        }
        for role, key in keys
    ]


# Published files that carry content credentials (the lineage document does not).
CREDENTIAL_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


def content_credentials(settings: Settings, store: ObjectStore, keys: list[str]) -> dict[str, dict[str, Any]]:
    """Blocking (storage, c2pa): each published image's C2PA manifest as a verifier sees it,
    checked against the trust anchors `lightbox verify` uses (Verification.summary()). The
    bytes verified are the stored ones, so what a page shows is what a customer downloads."""
    images = [key for key in keys if key.lower().endswith(CREDENTIAL_SUFFIXES)]
    if not images:
        return {}
    anchors, _ = trust_anchors_of(settings)
    return {key: verify_bytes(store.get_bytes(key), trust_anchors_pem=anchors).summary() for key in images}


def _detail(app: web.Application, job_id: str, timeline: dict[str, Any]) -> dict[str, Any]:
    """Blocking (storage): everything GET /v1/jobs/{id} answers besides the timeline itself."""
    settings, events = app[SETTINGS], timeline["events"]
    store: ObjectStore = app[STORE]
    source, record = stored_record(store, app[JOB_SERDE], job_id, events, settings.kafka.topic_prefix)
    published = published_files(store, events)
    keys = asset_keys(record, events, published)
    files = presigned(app[PRESIGNER], store.bucket, keys, settings.gateway.asset_url_ttl_s)
    credentials = content_credentials(settings, store, published)
    for file in files:
        if file["key"] in credentials:
            file["content_credentials"] = credentials[file["key"]]
    return {
        "job_id": job_id,
        "state": timeline["state"],
        "sku": _attribute(events, "sku"),
        "template": _attribute(events, "template"),
        "model": _attribute(list(reversed(events)), "model"),
        "replay_of": (record or {}).get("replay_of"),
        "scores": scores_of(events),
        "lineage": record,
        "lineage_source": source,
        "assets": files,
        "timeline": events,
    }


@routes.get("/v1/jobs/{job_id}")
async def get_job(request: web.Request) -> web.Response:
    require(request, *READERS)
    job_id = request.match_info["job_id"]
    try:
        check_id(job_id, "job_id")
    except EntryError as exc:
        raise Problem(400, str(exc), field="job_id", limit=exc.limit, kind="invalid-field") from None
    try:
        timeline = await request.app[EVENT_LOG].timeline(job_id)
    except EventLogUnavailable as exc:
        raise Problem(503, str(exc)) from None
    if not timeline.get("events"):
        raise Problem(404, f"no events recorded for job {job_id}")
    try:
        detail = await asyncio.to_thread(_detail, request.app, job_id, timeline)
    except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
        raise Problem(503, f"object storage could not be read: {str(exc)[:200]}") from None
    return json_response(detail)
