"""The gateway's contract: an OpenAPI 3.1 document at /openapi.json and a readable page at /docs.

The document is built here, in code, from the same constants the routes check (limits, roles,
states), and the catalog event's schema is derived from its Avro schema (schemas/avro), the one
source of truth: a field added there appears here. /docs renders the document as one
self-contained HTML page (no script, no CDN), with an anchor per problem type, which is where
every problem's `type` points.
"""

from __future__ import annotations

import functools
import html
import json
from typing import Any

from aiohttp import web

from gateway.ops.entry import MAX_EVENTS_PER_REQUEST, MAX_ID_CHARS
from gateway.ops.tokens import Role
from gateway.web.api import MAX_REQUEST_BYTES
from gateway.web.auth import CSRF_HEADER, SESSION_COOKIE
from gateway.web.idempotency import HEADER as IDEMPOTENCY_HEADER
from gateway.web.idempotency import MAX_KEY_CHARS, REPLAYED_HEADER
from gateway.web.jobs_api import DEFAULT_PAGE
from gateway.web.responses import PROBLEM_JSON, PROBLEM_TYPES, json_response, problem_type_uri
from processors.eventlog.queries import MAX_JOB_PAGE
from processors.job_states import LIFECYCLE
from processors.topology import JOB_STAGES
from schemas.registry import default_registry

routes = web.RouteTableDef()

ALL_ROLES = tuple(str(r) for r in Role)

# -- the catalog event, from Avro -------------------------------------------------------------

_INT32, _INT64 = 2**31, 2**63
# The last millisecond of year 9999: past it a timestamp-millis is no calendar time.
MAX_TIMESTAMP_MS = 253_402_300_799_999


def avro_to_json_schema(avro: Any, named: dict[str, Any] | None = None) -> dict[str, Any]:
    """JSON Schema (2020-12, as OpenAPI 3.1 uses) for values of an Avro type, as JSON clients send
    them: a timestamp-millis is epoch milliseconds (or, where the gateway accepts it, ISO-8601)."""
    named = {} if named is None else named
    if isinstance(avro, str):
        if avro in named:
            return named[avro]
        return {
            "null": {"type": "null"},
            "boolean": {"type": "boolean"},
            "int": {"type": "integer", "minimum": -_INT32, "maximum": _INT32 - 1},
            "long": {"type": "integer", "minimum": -_INT64, "maximum": _INT64 - 1},
            "float": {"type": "number"},
            "double": {"type": "number"},
            "string": {"type": "string"},
            "bytes": {"type": "string"},
        }[avro]
    if isinstance(avro, list):
        return {"anyOf": [avro_to_json_schema(member, named) for member in avro]}
    kind = avro["type"]
    if kind == "record":
        properties, required = {}, []
        for avro_field in avro["fields"]:
            schema = avro_to_json_schema(avro_field["type"], named)
            if avro_field.get("doc"):
                schema = {**schema, "description": avro_field["doc"]}
            properties[avro_field["name"]] = schema
            if "default" not in avro_field:
                required.append(avro_field["name"])
        document: dict[str, Any] = {"type": "object", "properties": properties, "required": required}
        if avro.get("doc"):
            document["description"] = avro["doc"]
        named[avro["name"]] = document
        return document
    if kind == "enum":
        document = {"type": "string", "enum": list(avro["symbols"])}
        named[avro["name"]] = document
        return document
    if kind == "array":
        return {"type": "array", "items": avro_to_json_schema(avro["items"], named)}
    if kind == "map":
        return {"type": "object", "additionalProperties": avro_to_json_schema(avro["values"], named)}
    if kind == "long" and avro.get("logicalType") == "timestamp-millis":
        return {
            "anyOf": [
                {
                    "type": "integer",
                    "minimum": 0,
                    "maximum": MAX_TIMESTAMP_MS,
                    "description": "epoch milliseconds",
                },
                {"type": "string", "format": "date-time"},
            ]
        }
    return avro_to_json_schema(kind, named)


def catalog_event_schema() -> dict[str, Any]:
    latest = default_registry().latest("catalog_event")
    return avro_to_json_schema(latest.parsed)


# -- the document -----------------------------------------------------------------------------

STRING_ID = {"type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS}
PROBLEM_SCHEMA = {
    "type": "object",
    "description": "RFC 9457 problem details: every error the gateway answers.",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "description": "A URI reference to this problem type on /docs."},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "field": {"type": "string", "description": "The offending field, header or parameter."},
        "limit": {"type": "integer", "description": "The limit the field went over."},
        "instance": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object"}},
        "checks": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}
_ERRORS = {
    400: "The request is malformed or a field is invalid (`field` names it).",
    401: "No identity: send `Authorization: Bearer <token>` (or log in for a session).",
    403: "The role may not do this, the Host is not this gateway's, the write came from another "
    "site, or a session's write lacks its CSRF token.",
    404: "Not found.",
    409: "Conflicts with the job's state (already decided, never reached that stage).",
    413: "The body (or a list in it) is over its limit (`limit`).",
    415: "The body must be application/json.",
    422: "Well-formed but refused: intake's validation, or an Idempotency-Key reused with another body.",
    503: "A dependency (Kafka, object storage, the event log) is unavailable; try again.",
}


def _problem(status: int) -> dict[str, Any]:
    return {
        "description": _ERRORS[status],
        "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _operation(
    summary: str,
    roles: tuple[str, ...] | None,
    ok: dict[int, dict[str, Any]],
    errors: tuple[int, ...] = (),
    *,
    body: dict[str, Any] | None = None,
    parameters: list[dict[str, Any]] | None = None,
    description: str = "",
) -> dict[str, Any]:
    """roles None: public (no token needed)."""
    statuses = {403, *errors}
    if roles is not None:
        statuses |= {401}
    if body is not None:
        statuses |= {400, 413, 415}
    operation: dict[str, Any] = {"summary": summary}
    if description:
        operation["description"] = description
    if roles is not None:
        operation["security"] = [{"bearerAuth": []}, {"sessionCookie": []}]
        operation["x-roles"] = list(roles) if roles != ALL_ROLES else ["any"]
    else:
        operation["security"] = []
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    operation["responses"] = {str(code): spec for code, spec in ok.items()} | {
        str(code): _problem(code) for code in sorted(statuses)
    }
    return operation


JOB_ID_PARAM = {"name": "job_id", "in": "path", "required": True, "schema": STRING_ID}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def _schemas() -> dict[str, Any]:
    timeline_event = {
        "type": "object",
        "properties": {
            "stage": {"type": "string"},
            "state": {"type": "string"},
            "at": {"type": "string"},
            "duration_ms": {"type": "number"},
            "reason": {"type": "string"},
            "detail": {"type": "string"},
            "attempt": {"type": "integer"},
            "attributes": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    }
    nullable_string = {"type": ["string", "null"]}
    return {
        "Problem": PROBLEM_SCHEMA,
        "CatalogEvent": catalog_event_schema(),
        "RequestAccepted": {
            "type": "object",
            "required": ["event_id", "status", "job_ids", "jobs"],
            "properties": {
                "event_id": {"type": "string"},
                "status": {"const": "accepted"},
                "job_ids": {"type": "array", "items": {"type": "string"}},
                "jobs": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"job_id": {"type": "string"}, "href": {"type": "string"}},
                    },
                },
            },
        },
        "EventsAccepted": {
            "type": "object",
            "required": ["accepted", "event_ids"],
            "properties": {
                "accepted": {"type": "integer"},
                "event_ids": {"type": "array", "items": {"type": "string"}},
            },
        },
        "JobRow": {
            "type": "object",
            "required": ["job_id", "state", "created_ms", "updated_ms", "href"],
            "properties": {
                "job_id": {"type": "string"},
                "state": {"type": "string", "enum": list(LIFECYCLE)},
                "created_ms": {"type": "integer"},
                "updated_ms": {"type": "integer"},
                "sku": nullable_string,
                "campaign": nullable_string,
                "template": nullable_string,
                "model": nullable_string,
                "href": {"type": "string"},
            },
        },
        "JobPage": {
            "type": "object",
            "required": ["jobs", "next_cursor"],
            "properties": {
                "jobs": {"type": "array", "items": _ref("JobRow")},
                "next_cursor": {
                    "type": ["string", "null"],
                    "description": "Pass as `cursor` for the next page; null on the last.",
                },
            },
        },
        "TimelineEvent": timeline_event,
        "Asset": {
            "type": "object",
            "required": ["role", "key", "url", "expires_at"],
            "properties": {
                "role": {"type": "string", "enum": ["published", "generated", "derivative"]},
                "key": {"type": "string"},
                "url": {"type": "string", "description": "A presigned GET URL, valid until expires_at."},
                "expires_at": {"type": "string", "format": "date-time"},
                "content_credentials": {
                    "type": "object",
                    "description": (
                        "Published images only: the file's C2PA manifest as a verifier reads it "
                        "from the stored bytes (`lightbox verify` gives the full report)."
                    ),
                    "required": ["ok", "state", "intact", "trusted", "signer", "failures"],
                    "properties": {
                        "ok": {"type": "boolean", "description": "intact and signed by a trusted chain"},
                        "state": {
                            "type": "string",
                            "description": "c2pa's: Trusted, Valid, Invalid; or absent",
                        },
                        "intact": {"type": "boolean"},
                        "trusted": {"type": "boolean"},
                        "signer": {"type": "string"},
                        "digital_source_type": {"type": "string"},
                        "failures": {"type": "array", "items": {"type": "string"}},
                    },
                },
            },
        },
        "JobDetail": {
            "type": "object",
            "required": ["job_id", "state", "scores", "assets", "timeline"],
            "properties": {
                "job_id": {"type": "string"},
                "state": {"type": "string"},
                "sku": nullable_string,
                "template": nullable_string,
                "model": nullable_string,
                "replay_of": nullable_string,
                "scores": {"type": "array", "items": {"type": "object"}},
                "lineage": {
                    "type": ["object", "null"],
                    "description": "The job record: request, template, route and model, generation "
                    "parameters, references used and dropped, quality, review, published files.",
                },
                "lineage_source": {
                    "type": ["string", "null"],
                    "enum": ["published", "decided", "held", None],
                },
                "assets": {"type": "array", "items": _ref("Asset")},
                "timeline": {"type": "array", "items": _ref("TimelineEvent")},
            },
        },
        "Decision": {
            "type": "object",
            "required": ["decision"],
            "additionalProperties": False,
            "properties": {
                "decision": {"type": "string", "enum": ["approve", "reject"]},
                "reason": {
                    "type": "string",
                    "description": "Required to reject. The reviewer is the token's name.",
                },
            },
        },
        "DecisionAccepted": {
            "type": "object",
            "properties": {
                "job_id": {"type": "string"},
                "decision": {"type": "string"},
                "reviewer": {"type": "string"},
                "status": {"const": "submitted"},
            },
        },
        "Replay": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "from_stage": {"type": "string", "enum": list(JOB_STAGES), "default": "generate"},
                "model": {"type": ["string", "null"], "maxLength": MAX_ID_CHARS},
                "backend": {"type": ["string", "null"], "maxLength": MAX_ID_CHARS},
            },
        },
        "ReplayAccepted": {
            "type": "object",
            "required": ["job_id", "replay_of", "from_stage"],
            "properties": {
                "job_id": {"type": "string"},
                "replay_of": {"type": "string"},
                "from_stage": {"type": "string"},
                "topic": {"type": "string"},
                "model": nullable_string,
                "backend": nullable_string,
                "href": {"type": "string"},
            },
        },
        "Login": {
            "type": "object",
            "required": ["token"],
            "properties": {"token": {"type": "string", "maxLength": 512}},
        },
        "Session": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "role": {"type": "string", "enum": list(ALL_ROLES)},
                "csrf_token": {
                    "type": "string",
                    "description": f"Send as {CSRF_HEADER} on a session's writes.",
                },
            },
        },
        "Identity": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "role": {"type": "string", "enum": list(ALL_ROLES)}},
        },
        "Readiness": {
            "type": "object",
            "properties": {
                "ready": {"type": "boolean"},
                "checks": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
    }


@functools.cache
def document() -> dict[str, Any]:
    list_params = [
        _query("state", {"type": "string", "enum": list(LIFECYCLE)}, "The job's current state."),
        _query("sku", STRING_ID, "The product's SKU."),
        _query("campaign", STRING_ID, "The request's campaign tag."),
        _query("template", STRING_ID, "A template id (any version) or id@version."),
        _query("model", STRING_ID, "The model that generated (or is routed to generate) it."),
        _query("since", {"type": "string"}, "Created at or after: epoch ms or ISO-8601."),
        _query("until", {"type": "string"}, "Created before: epoch ms or ISO-8601."),
        _query(
            "limit",
            {"type": "integer", "minimum": 1, "maximum": MAX_JOB_PAGE, "default": DEFAULT_PAGE},
            "Page size.",
        ),
        _query("cursor", {"type": "string", "maxLength": 512}, "next_cursor of the previous page."),
    ]
    idempotency = {
        "name": IDEMPOTENCY_HEADER,
        "in": "header",
        "required": False,
        "schema": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_KEY_CHARS,
            "pattern": "^[\\x21-\\x7e]+$",
        },
        "description": "Same key and same body: the first answer again (with "
        f"`{REPLAYED_HEADER}: true`), nothing published twice. Same key, other body: 422.",
    }
    paths = {
        "/v1/requests": {
            "post": _operation(
                "Request assets for a product (one catalog event)",
                (str(Role.SUBMITTER),),
                {202: _json(_ref("RequestAccepted"), "Published; these are the jobs it will make.")},
                (422, 503),
                body=_ref("CatalogEvent"),
                parameters=[idempotency],
                description="Validated as intake validates it, published to Kafka, and answered at once "
                "with the ids of the jobs it will make (job ids are deterministic). At most "
                f"{MAX_REQUEST_BYTES} bytes. Completion webhooks go to the URL configured for the "
                "event's `source` (webhooks.sources), signed the Standard Webhooks way.",
            )
        },
        "/v1/events": {
            "post": _operation(
                "Publish catalog events in bulk (all or nothing)",
                (str(Role.SUBMITTER),),
                {202: _json(_ref("EventsAccepted"), "Every event acknowledged by Kafka.")},
                (503,),
                body={
                    "anyOf": [
                        _ref("CatalogEvent"),
                        {
                            "type": "object",
                            "required": ["events"],
                            "properties": {
                                "events": {
                                    "type": "array",
                                    "items": _ref("CatalogEvent"),
                                    "minItems": 1,
                                    "maxItems": MAX_EVENTS_PER_REQUEST,
                                }
                            },
                        },
                    ]
                },
            )
        },
        "/v1/jobs": {
            "get": _operation(
                "List jobs, newest first",
                ALL_ROLES,
                {200: _json(_ref("JobPage"), "A page of jobs.")},
                (400, 503),
                parameters=list_params,
            )
        },
        "/v1/jobs/{job_id}": {
            "get": _operation(
                "A job: state, timeline, scores, lineage and presigned asset URLs",
                ALL_ROLES,
                {200: _json(_ref("JobDetail"), "The job.")},
                (400, 404, 503),
                parameters=[JOB_ID_PARAM],
            )
        },
        "/v1/jobs/{job_id}/decision": {
            "post": _operation(
                "Approve or reject a held asset",
                (str(Role.REVIEWER),),
                {202: _json(_ref("DecisionAccepted"), "Sent to the publish stage.")},
                (404, 409, 503),
                body=_ref("Decision"),
                parameters=[JOB_ID_PARAM],
                description="The reviewer recorded is the caller's token name. The first decision wins.",
            )
        },
        "/v1/jobs/{job_id}/replay": {
            "post": _operation(
                "Run a job again from a stage, optionally with another model",
                (str(Role.SRE),),
                {202: _json(_ref("ReplayAccepted"), "The replay job was produced.")},
                (404, 409, 503),
                body=_ref("Replay"),
                parameters=[JOB_ID_PARAM],
            )
        },
        "/v1/summary": {
            "get": _operation(
                "Jobs by state, latency percentiles, artifact rate, failure reasons",
                ALL_ROLES,
                {200: _json({"type": "object"}, "The summary.")},
                (400, 503),
                parameters=[_query("since_ms", {"type": "integer", "minimum": 0}, "Only events since then.")],
            )
        },
        "/v1/whoami": {
            "get": _operation(
                "The caller's identity", ALL_ROLES, {200: _json(_ref("Identity"), "Who the token is.")}
            )
        },
        "/v1/session": {
            "post": _operation(
                "Log a browser in with a token (sets the session cookie)",
                None,
                {200: _json(_ref("Session"), "Logged in; the cookie is set.")},
                (401,),
                body=_ref("Login"),
            ),
            "delete": _operation(
                "Log out (clears the session cookie)", None, {204: {"description": "Logged out."}}
            ),
        },
        "/healthz": {
            "get": _operation("Liveness", None, {200: _json({"type": "object"}, "The process serves.")})
        },
        "/readyz": {
            "get": _operation(
                "Readiness: Kafka, object storage, the schema registry and the event log answer",
                None,
                {200: _json(_ref("Readiness"), "Every dependency answers.")},
                (503,),
            )
        },
        "/metrics": {
            "get": _operation(
                "Prometheus metrics",
                (str(Role.SRE), str(Role.ANALYST)),
                {
                    200: {
                        "description": "Prometheus text format.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            )
        },
        "/docs": {
            "get": _operation(
                "This document as a page",
                None,
                {200: {"description": "HTML.", "content": {"text/html": {"schema": {"type": "string"}}}}},
            )
        },
        "/openapi.json": {
            "get": _operation("This document", None, {200: _json({"type": "object"}, "OpenAPI 3.1.")})
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Lightbox gateway",
            "version": "1",
            "description": "Catalog events in, generated, quality-checked, traceable product images out. "
            "Every route needs an API token (`lightbox tokens create --name NAME --role ROLE`) sent as "
            "`Authorization: Bearer <token>`, except those marked public. Roles: "
            f"{', '.join(ALL_ROLES)}; admin may do everything. Every error is application/problem+json.",
        },
        "paths": paths,
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "description": "An API token (lbx_...)."},
                "sessionCookie": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": SESSION_COOKIE,
                    "description": f"A browser session (POST /v1/session); writes also need {CSRF_HEADER}.",
                },
            },
        },
    }


@routes.get("/openapi.json")
async def openapi_json(request: web.Request) -> web.Response:
    return json_response(document())


# -- /docs ------------------------------------------------------------------------------------

_STYLE = """
body{font:15px/1.5 system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#1b1b1b}
h1{margin-bottom:.2em} h2{margin-top:2em;border-bottom:1px solid #ddd}
.op{border:1px solid #ddd;border-radius:6px;margin:1em 0;padding:.6em 1em}
.m{display:inline-block;min-width:4.5em;font-weight:700;font-family:monospace}
.get{color:#0a6} .post{color:#06c} .delete{color:#c30} code,pre{font-family:ui-monospace,monospace}
pre{background:#f6f6f6;padding:.6em;overflow:auto;font-size:13px;max-height:24em}
table{border-collapse:collapse}
td,th{border:1px solid #ddd;padding:.2em .5em;text-align:left;vertical-align:top}
.roles{color:#555} details{margin:.3em 0}
"""


def _resolve(schema: dict[str, Any], components: dict[str, Any]) -> Any:
    ref = schema.get("$ref") if isinstance(schema, dict) else None
    return components[ref.rsplit("/", 1)[-1]] if ref else schema


def render_docs(doc: dict[str, Any]) -> str:
    components = doc["components"]["schemas"]
    esc = html.escape
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>{esc(doc['info']['title'])}: API</title><style>{_STYLE}</style></head><body>",
        f"<h1>{esc(doc['info']['title'])}</h1><p>{esc(doc['info']['description'])}</p>",
        '<p>The machine-readable contract: <a href="/openapi.json">/openapi.json</a> (OpenAPI 3.1).</p>',
        "<h2>Routes</h2>",
    ]
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            roles = op.get("x-roles")
            who = f"roles: {', '.join(roles)} (admin always)" if roles else "public"
            anchor, verb = f"{method}-{path}", method.upper()
            parts.append(
                f'<div class=op id="{esc(anchor)}"><span class="m {esc(method)}">{esc(verb)}</span>'
                f"<code>{esc(path)}</code> &mdash; {esc(op['summary'])} <span class=roles>[{esc(who)}]</span>"
            )
            if op.get("description"):
                parts.append(f"<p>{esc(op['description'])}</p>")
            if op.get("parameters"):
                parts.append("<table><tr><th>parameter</th><th>in</th><th>schema</th><th></th></tr>")
                for p in op["parameters"]:
                    schema_text, about = json.dumps(p["schema"]), p.get("description", "")
                    parts.append(
                        f"<tr><td><code>{esc(p['name'])}</code></td><td>{esc(p['in'])}</td>"
                        f"<td><code>{esc(schema_text)}</code></td><td>{esc(about)}</td></tr>"
                    )
                parts.append("</table>")
            if "requestBody" in op:
                schema = op["requestBody"]["content"]["application/json"]["schema"]
                shown = _resolve(schema, components)
                parts.append(
                    "<details><summary>request body (application/json)</summary>"
                    f"<pre>{esc(json.dumps(shown, indent=2))}</pre></details>"
                )
            parts.append("<table><tr><th>status</th><th>meaning</th></tr>")
            for status, response in op["responses"].items():
                parts.append(f"<tr><td>{esc(status)}</td><td>{esc(response['description'])}</td></tr>")
            parts.append("</table></div>")
    parts.append("<h2>Problem types</h2><p>Every error body is <code>application/problem+json</code>:</p>")
    parts.append(
        f"<pre>{esc(json.dumps(PROBLEM_SCHEMA, indent=2))}</pre><table><tr><th>type</th><th>title</th></tr>"
    )
    for slug, title in PROBLEM_TYPES.items():
        uri = problem_type_uri(slug)
        parts.append(
            f'<tr id="problem-{esc(slug)}"><td><code>{esc(uri)}</code></td><td>{esc(title)}</td></tr>'
        )
    parts.append("</table><h2>Schemas</h2>")
    for name, schema in components.items():
        parts.append(
            f'<details id="schema-{esc(name)}"><summary><code>{esc(name)}</code></summary>'
            f"<pre>{esc(json.dumps(schema, indent=2))}</pre></details>"
        )
    parts.append("</body></html>")
    return "".join(parts)


@routes.get("/docs")
async def docs(request: web.Request) -> web.Response:
    headers = {
        "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
        "X-Content-Type-Options": "nosniff",
    }
    return web.Response(text=_docs_html(), content_type="text/html", headers=headers)


@functools.cache
def _docs_html() -> str:
    return render_docs(document())
