"""The job page: a job's timeline, every variant it generated with the scores recorded for it,
its lineage, and a replay side by side with the job it replays (or any two jobs, ?compare=ID).

What is known of a job comes from two places. The event log has its timeline, from the first
stage on. The job's full record (references, prompt, route, generation, scores, review) is kept
in storage once the publish stage has it: the lineage document beside a published job's files,
the decided record, or the review queue's, newest first (found as GET /v1/jobs/{id} finds it,
jobs_api.stored_record). A job still on its way, or failed before
publish, shows its timeline and its generated images only.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

from aiohttp import web

from gateway.ops.compare import changed_names, outcome, parameters, parameters_from_events
from gateway.ops.entry import EntryError, check_id
from gateway.web.jobs_api import content_credentials, published_files, stored_record
from gateway.web.pages import (
    JOB_READERS,
    STORAGE_ERRORS,
    PageError,
    page,
    page_identity,
    render,
    score_chips,
    storage_unavailable,
    stream_image,
)
from gateway.web.resources import EVENT_LOG, JOB_SERDE, SETTINGS, STORE
from processors.eventlog.reader import EventLogError
from processors.job_states import JobState
from processors.references.images import product_reference
from processors.storage import ObjectStore
from processors.storage_keys import generated_prefix
from schemas.serde import AvroSerde

routes = web.RouteTableDef()

# generated/<job>/a<attempt>/v<variant>/<sha256>.png (and the older .../a<attempt>/v<variant>.png).
_GENERATED = re.compile(r"/a(\d+)/v(\d+)(?:/([0-9a-f]{64}))?\.png$")
SCORE_PREFIX = "score."


@dataclass
class Record:
    """A job's stored record and where it was found ("" and None when none is stored yet)."""

    job: dict[str, Any] | None = None
    source: str = ""
    # Every file under the job's published prefix (the lineage document is written before the
    # job's own published_keys are, so it cannot list them).
    published: list[str] = field(default_factory=list)
    # Published image -> its content credentials as a verifier sees them (jobs_api).
    credentials: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class Variant:
    index: int
    key: str
    digest: str
    url: str
    chosen: bool = False
    scores: list[tuple[str, str]] = field(default_factory=list)  # name, as shown
    note: str = ""


@dataclass
class Attempt:
    number: int
    verdict: str = ""
    reasons: list[str] = field(default_factory=list)
    variants: list[Variant] = field(default_factory=list)


@dataclass
class JobView:
    job_id: str
    state: str
    events: list[dict[str, Any]]
    record: Record
    attempts: list[Attempt]

    @property
    def job(self) -> dict[str, Any] | None:
        return self.record.job

    @property
    def url(self) -> str:
        return job_url(self.job_id)

    @property
    def kept_image_url(self) -> str | None:
        for attempt in reversed(self.attempts):
            for variant in attempt.variants:
                if variant.chosen:
                    return variant.url
        return None

    @property
    def kept_scores(self) -> list[tuple[str, str]]:
        for attempt in reversed(self.attempts):
            for variant in attempt.variants:
                if variant.chosen and variant.scores:
                    return variant.scores
        return []


def job_url(job_id: str) -> str:
    return f"/jobs/{quote(job_id, safe='')}"


def file_url(job_id: str, key: str) -> str:
    return f"{job_url(job_id)}/file?{urlencode({'key': key})}"


# -- reading the record --------------------------------------------------------------------------


# Where the record was found (jobs_api.stored_record's answer), as the page says it.
SOURCES = {"published": "published lineage", "decided": "review decision", "held": "review queue"}


def find_record(
    store: ObjectStore, serde: AvroSerde, topic_prefix: str, job_id: str, timeline: dict[str, Any]
) -> Record:
    """The most complete stored record of a job (published lineage, then decided, then held),
    found the way GET /v1/jobs/{id} finds it, and the job's published files."""
    events = list(timeline.get("events") or [])
    source, job = stored_record(store, serde, job_id, events, topic_prefix)
    return Record(job, SOURCES.get(source or "", ""), published=published_files(store, events))


def _generated_keys(store: ObjectStore, job_id: str) -> list[str]:
    return sorted(store.list_keys(generated_prefix(job_id)))


def _allowed_keys(record: Record) -> set[str]:
    """Every stored object a job's record names, and its published files (besides its generated
    images)."""
    job, keys = record.job, set(record.published)
    if job is None:
        return keys
    keys |= {ref["key"] for ref in job.get("references") or []}
    keys |= {ref["mask_key"] for ref in job.get("references") or [] if ref.get("mask_key")}
    keys |= {d["key"] for d in job.get("derivatives") or []}
    keys |= set(job.get("published_keys") or [])
    if job.get("asset_key"):
        keys.add(job["asset_key"])
    return keys


# -- building the view ---------------------------------------------------------------------------


def _scores_of(attributes: dict[str, str]) -> dict[str, float]:
    scores = {}
    for name, value in attributes.items():
        if name.startswith(SCORE_PREFIX):
            try:
                scores[name.removeprefix(SCORE_PREFIX)] = float(value)
            except ValueError:
                continue
    return scores


def _verdict(event: dict[str, Any]) -> str:
    attributes = event.get("attributes") or {}
    if event["state"] == JobState.RETRY:
        return "below threshold: retried"
    if event["state"] == JobState.FAILED and event.get("reason") == "quality_rejection":
        return "below threshold: failed"
    if event["state"] == JobState.COMPLETED:
        return "below threshold: sent to review" if attributes.get("needs_review") == "true" else "passed"
    return ""


def attempts_of(
    job_id: str, keys: Iterable[str], events: list[dict[str, Any]], job: dict[str, Any] | None
) -> list[Attempt]:
    """Every generated image by attempt, the one the quality gate kept marked, with the scores
    its verdict recorded. The gate scores every variant but records the kept one's scores only."""
    verdicts: dict[int, dict[str, Any]] = {}
    for event in events:
        if event["stage"] == "quality" and _verdict(event):
            verdicts[int(event.get("attempt") or 0)] = event  # the latest verdict per attempt
    # Records written before the verdict named its image: the record's own choice, for its attempt.
    record_choice: dict[int, str] = {}
    if job and job.get("asset_key"):
        record_choice[int(job.get("attempt") or 0)] = job["asset_key"]
    attempts: dict[int, Attempt] = {}
    for key in keys:
        match = _GENERATED.search(key)
        if not match:
            continue
        number, index = int(match.group(1)), int(match.group(2))
        attempt = attempts.setdefault(number, Attempt(number))
        attempt.variants.append(Variant(index, key, match.group(3) or "", file_url(job_id, key)))
    for number, attempt in attempts.items():
        verdict = verdicts.get(number)
        attributes = (verdict or {}).get("attributes") or {}
        kept = attributes.get("asset_key") or record_choice.get(number)
        if verdict is not None:
            attempt.verdict = _verdict(verdict)
            attempt.reasons = [r for r in str(verdict.get("detail") or "").split("; ") if r]
        for variant in attempt.variants:
            if variant.key == kept:
                variant.chosen = True
                scores = _scores_of(attributes)
                if not scores and job and record_choice.get(number) == variant.key:
                    scores = (job.get("quality") or {}).get("scores") or {}
                variant.scores = score_chips(scores)
            elif verdict is not None:
                variant.note = "scored, not kept (only the kept variant's scores are recorded)"
            else:
                variant.note = "not scored yet"
        attempt.variants.sort(key=lambda v: (v.index, v.key))
    return [attempts[n] for n in sorted(attempts)]


def _checked_id(job_id: str) -> str:
    try:
        return check_id(job_id, "job_id")
    except EntryError as exc:
        raise PageError(400, "Not a job id", str(exc)) from None


async def _timeline_and_record(request: web.Request, job_id: str) -> tuple[dict[str, Any], Record]:
    """The job's timeline and its most complete stored record; PageError 503 when the event log
    or storage cannot answer."""
    try:
        timeline = await request.app[EVENT_LOG].timeline(job_id)
    except EventLogError as exc:
        raise PageError(503, "The event log cannot answer", str(exc)) from None
    store, serde = request.app[STORE], request.app[JOB_SERDE]
    prefix = request.app[SETTINGS].kafka.topic_prefix
    try:
        return timeline, await asyncio.to_thread(find_record, store, serde, prefix, job_id, timeline)
    except STORAGE_ERRORS as exc:
        raise storage_unavailable(exc) from None


async def load_view(request: web.Request, job_id: str) -> JobView:
    """Timeline, record and generated images of one job; PageError 400/503 when it cannot be."""
    _checked_id(job_id)
    timeline, record = await _timeline_and_record(request, job_id)
    store = request.app[STORE]
    try:
        keys = await asyncio.to_thread(_generated_keys, store, job_id)
        record.credentials = await asyncio.to_thread(
            content_credentials, request.app[SETTINGS], store, record.published
        )
    except STORAGE_ERRORS as exc:
        raise storage_unavailable(exc) from None
    events = list(timeline.get("events") or [])
    attempts = attempts_of(job_id, keys, events, record.job)
    return JobView(job_id, str(timeline.get("state")), events, record, attempts)


def _at_text(value: Any) -> str:
    """A time to the millisecond, in UTC, as the page shows every time (the event log's ISO
    text, a record's datetime, or epoch milliseconds)."""
    try:
        if isinstance(value, int):
            at = dt.datetime.fromtimestamp(value / 1000, dt.UTC)
        else:
            at = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
    except (ValueError, OverflowError, OSError):
        return str(value)
    if at.tzinfo is not None:
        at = at.astimezone(dt.UTC)
    return at.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _text(value: Any) -> str:
    if value is None or value == "":
        return "–"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in sorted(value.items())) or "–"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "–"
    return str(value)


Row = tuple[str, str, str]  # label, value, link ("" for none)


def _group(title: str, rows: list[tuple[str, Any] | Row], text: str = "") -> dict[str, Any]:
    out: list[Row] = []
    for row in rows:
        label, value, href = row if len(row) == 3 else (row[0], row[1], "")  # type: ignore[misc]
        out.append((label, _text(value), href))
    return {"title": title, "rows": out, "text": text}


def _model(generation: dict[str, Any]) -> str:
    return f"{generation.get('model')} ({generation.get('model_version')})"


def credentials_text(summary: dict[str, Any]) -> str:
    """One line a reviewer reads: does this file's C2PA manifest verify, who signed it, and what
    it declares the image to be."""
    verdict = "verifies" if summary.get("ok") else "does NOT verify"
    parts = [f"{verdict} ({summary.get('state')})"]
    if summary.get("signer"):
        parts.append(f"signed by {summary['signer']}")
    if summary.get("digital_source_type"):
        parts.append(str(summary["digital_source_type"]))
    if summary.get("failures"):
        parts.append("failures: " + ", ".join(summary["failures"]))
    return " · ".join(parts)


def lineage_groups(
    job_id: str,
    job: dict[str, Any],
    published_keys: list[str],
    credentials: dict[str, dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """The record as groups of facts: which request, template, model, seed and parameters made
    the asset, which references it used and dropped, who decided, and how to make it again."""
    spec, product = job.get("spec") or {}, job.get("product") or {}
    prompt, route = job.get("prompt") or {}, job.get("route") or {}
    generation, quality = job.get("generation") or {}, job.get("quality") or {}
    review = job.get("review") or {}
    replay_of, supersedes = job.get("replay_of"), job.get("supersedes")
    groups = [
        _group(
            "Request",
            [
                ("event", job.get("event_id")),
                ("slot", job.get("idempotency_key")),
                ("submitted", _at_text(job["submitted_at"]) if job.get("submitted_at") else None),
                ("asset version", job.get("asset_version")),
                ("replay of", replay_of, job_url(replay_of) if replay_of else ""),
                ("supersedes", supersedes, job_url(supersedes) if supersedes else ""),
                ("campaign", spec.get("campaign")),
                ("risk · priority", f"{spec.get('risk')} · {spec.get('priority')}"),
                ("confidential", spec.get("confidential")),
                ("variants asked", spec.get("variants")),
                ("regenerate", f"lightbox replay {job_id} --from-stage generate"),
            ],
        ),
        _group(
            "Product",
            [
                ("sku", product.get("sku")),
                ("title", product.get("title")),
                ("brand", product.get("brand")),
                ("category", product.get("category")),
                ("attributes", product.get("attributes")),
                ("product sha256", job.get("product_sha256")),
            ],
        ),
        _group(
            "Template and prompt",
            [
                (
                    "template",
                    f"{prompt.get('template_id') or spec.get('template_id')} "
                    f"{prompt.get('template_version') or spec.get('template_version') or ''}",
                ),
                ("negative", prompt.get("negative")),
                ("variables", prompt.get("variables")),
            ],
            text=str(prompt.get("positive") or ""),
        ),
        _group(
            "Route",
            [
                ("rule", f"{route.get('rule_id')} (rules {route.get('rules_version')})" if route else None),
                ("backend · model", f"{route.get('backend')} · {route.get('model')}" if route else None),
                ("pool", route.get("pool")),
                ("fallbacks", route.get("fallbacks")),
                ("params", route.get("params")),
                ("canary", route.get("canary")),
            ],
        ),
        _group(
            "Generation",
            [
                ("backend", generation.get("backend")),
                ("model", _model(generation) if generation else None),
                ("seed", generation.get("seed")),
                (
                    "sampler · steps · guidance",
                    f"{generation.get('sampler')} · {generation.get('steps')} · {generation.get('guidance')}"
                    if generation
                    else None,
                ),
                ("size", f"{generation.get('width')}×{generation.get('height')}" if generation else None),
                ("batch size", generation.get("batch_size")),
                (
                    "queue wait · compute",
                    f"{generation.get('queue_wait_ms', 0):.0f} ms · {generation.get('compute_ms', 0):.0f} ms"
                    if generation
                    else None,
                ),
                ("fell back from", generation.get("fell_back_from")),
            ],
        ),
    ]
    references: list[tuple[str, Any] | Row] = [
        (ref["role"].lower(), f"{ref['width']}×{ref['height']} · sha256 {ref['sha256'][:16]}…",
         file_url(job_id, ref["key"]))
        for ref in job.get("references") or []
    ]  # fmt: skip
    references += [
        (f"{drop['role'].lower()} (dropped)", f"{drop['reason']}: {drop['detail']}")
        for drop in job.get("dropped_references") or []
    ]
    groups.append(_group("References", references or [("references", None)]))
    groups.append(
        _group(
            "Quality",
            [
                ("passed", quality.get("passed")),
                ("kept variant", quality.get("chosen_index")),
                ("scores", ", ".join(f"{k} {v}" for k, v in score_chips(quality.get("scores") or {}))),
                ("reasons", quality.get("reasons")),
                ("attempt", job.get("attempt")),
            ],
        )
    )
    groups.append(
        _group(
            "Review",
            [
                ("decision", review.get("decision")),
                ("reviewer", review.get("reviewer")),
                ("reason", review.get("reason")),
                ("decided", _at_text(review["decided_at"]) if review.get("decided_at") else None),
            ],
        )
    )
    published: list[tuple[str, Any] | Row] = [
        (key.rsplit("/", 1)[-1], key, file_url(job_id, key))
        for key in published_keys or job.get("published_keys") or []
    ]
    groups.append(_group("Published", published or [("files", None)]))
    signed = [
        (key.rsplit("/", 1)[-1], credentials_text(summary), file_url(job_id, key))
        for key, summary in sorted((credentials or {}).items())
    ]
    if signed:
        groups.append(_group("Content credentials (C2PA)", signed))
    return groups


def _product_view(job: dict[str, Any] | None) -> dict[str, Any] | None:
    if not job:
        return None
    spec = job.get("spec") or {}
    slot = " · ".join(str(spec[k]) for k in ("asset_type", "channel", "locale") if spec.get(k))
    return {**(job.get("product") or {}), "slot": slot}


def compared(heading: str, left: dict[str, Any], right: dict[str, Any]) -> dict[str, Any]:
    """Two sides, each row marked where the other side's row differs (what the replay changed:
    gateway/ops/compare.py decides, as for `lightbox compare`)."""
    changed = changed_names(*({name: value for name, value, _ in side["rows"]} for side in (left, right)))
    for side in (left, right):
        side["rows"] = [(name, value, name in changed) for name, value, _ in side["rows"]]
    return {"heading": heading, "left": left, "right": right}


def side_of(view: JobView, label: str) -> dict[str, Any]:
    """One column of a side-by-side comparison."""
    job = view.job or {}
    generation, review = job.get("generation") or {}, job.get("review") or {}
    # A job with no stored record (failed, rejected, on its way): what its events say.
    params = parameters(job) if view.job else parameters_from_events(view.job_id, view.events)
    ended = outcome(view.events)
    ended_text = f"{ended['stage'] or '-'} / {ended['state'] or '-'}"
    rows = [
        ("model", _model(generation) if generation else params["model"]),
        ("backend", params["backend"]),
        ("seed", params["seed"]),
        ("steps · guidance", f"{generation['steps']} · {generation['guidance']}" if generation else None),
        ("attempts", len(view.attempts)),
        ("review", f"{str(review.get('decision')).lower()} by {review.get('reviewer')}" if review else None),
        ("ended at", f"{ended_text}: {ended['reason']}" if ended["reason"] else ended_text),
        ("events", len(view.events)),
    ]
    return {
        "label": label,
        "job_id": view.job_id,
        "url": view.url,
        "state": view.state,
        "image_url": view.kept_image_url,
        "scores": view.kept_scores,
        "rows": [(name, _text(value), False) for name, value in rows],
    }


@routes.get("/jobs")
@page
async def find_job(request: web.Request) -> web.Response:
    """The header's "job id" box: on to that job's page."""
    page_identity(request, *JOB_READERS)
    job_id = request.query.get("id", "").strip()
    if not job_id:
        raise PageError(400, "Which job?", "type a job id into the box at the top of the page")
    raise web.HTTPSeeOther(job_url(job_id))


@routes.get("/jobs/{job_id}")
@page
async def job_page(request: web.Request) -> web.Response:
    page_identity(request, *JOB_READERS)
    view = await load_view(request, request.match_info["job_id"])
    compare_id = request.query.get("compare", "").strip()
    compare = None
    if compare_id:
        other = await load_view(request, compare_id)
        compare = compared("Side by side", side_of(view, "this job"), side_of(other, "compared with"))
    elif view.job and view.job.get("replay_of"):
        original = await load_view(request, view.job["replay_of"])
        heading = "A replay: the original and its replay side by side (what differs is marked)"
        compare = compared(heading, side_of(original, "original"), side_of(view, "replay"))
    reference = product_reference(view.job) if view.job else None
    job = {
        "job_id": view.job_id,
        "url": view.url,
        "state": view.state,
        "events": [{**event, "at": _at_text(event["at"])} for event in view.events],
        "reference_url": file_url(view.job_id, reference["key"]) if reference else "",
        "attempts": view.attempts,
        "product": _product_view(view.job),
        "slot": (_product_view(view.job) or {}).get("slot", ""),
        "record_source": view.record.source,
        "lineage": lineage_groups(view.job_id, view.job, view.record.published, view.record.credentials)
        if view.job
        else [],
    }
    return render(request, "job.html", job=job, compare=compare, compare_id=compare_id)


@routes.get("/jobs/{job_id}/file")
@page
async def job_file(request: web.Request) -> web.StreamResponse:
    """One stored image of a job: its generated images, or an object its record names (a
    reference, a derivative, a published file). Never any other key."""
    page_identity(request, *JOB_READERS)
    job_id, key = request.match_info["job_id"], request.query.get("key", "")
    _checked_id(job_id)
    if not key.startswith(generated_prefix(job_id)) or ".." in key:
        _, record = await _timeline_and_record(request, job_id)
        if key not in _allowed_keys(record):
            raise PageError(404, "Not this job's file", f"job {job_id} names no stored file {key!r}")
    return await stream_image(request, key, f"job {job_id}'s file")
