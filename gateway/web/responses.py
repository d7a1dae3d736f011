"""The gateway's JSON responses and its one error shape: RFC 9457 problem details.

Every error the gateway answers is ``application/problem+json``::

    {"type": "/docs#problem-invalid-field", "title": "Invalid field", "status": 400,
     "detail": "reason: 1048576 characters, at most 2000 (review.max_reason_chars)",
     "field": "reason", "limit": 2000, "instance": "/v1/jobs/j1/decision"}

`type` points at the docs page, which lists every problem type. A handler raises `Problem`; the
`problems` middleware (below, so the shape has one home) turns it, aiohttp's own 404/405/413,
and anything unexpected into that body.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from aiohttp import web

PROBLEM_JSON = "application/problem+json"

log = logging.getLogger("lightbox.gateway")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Problem types: slug -> title. The docs page lists them (gateway/web/openapi.py).
PROBLEM_TYPES: dict[str, str] = {
    "invalid-request": "Invalid request",
    "invalid-field": "Invalid field",
    "unauthenticated": "Authentication required",
    "forbidden": "Not allowed for this role",
    "csrf": "Missing or wrong CSRF token",
    "foreign-host": "Not addressed to this gateway",
    "cross-site": "Posted by another site",
    "not-found": "Not found",
    "method-not-allowed": "Method not allowed",
    "conflict": "Conflict",
    "idempotency-key-reused": "Idempotency-Key reused with another body",
    "too-large": "Request too large",
    "too-many-wrong-secrets": "Too many wrong secrets for this token",
    "unsupported-media-type": "Unsupported media type",
    "unavailable": "A dependency is unavailable",
    "not-ready": "Not ready",
    "internal": "Internal error",
}

_DEFAULT_TYPE = {
    400: "invalid-request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    409: "conflict",
    413: "too-large",
    415: "unsupported-media-type",
    429: "too-many-wrong-secrets",
    422: "invalid-request",
    503: "unavailable",
}


def problem_type_uri(slug: str) -> str:
    return f"/docs#problem-{slug}"


@dataclass
class Problem(Exception):
    """An error answer. Raise it from a handler (or a helper a handler calls)."""

    status: int
    detail: str
    field: str | None = None
    kind: str | None = None  # a PROBLEM_TYPES slug; default from the status
    limit: int | None = None
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __str__(self) -> str:
        return self.detail

    def body(self, instance: str | None = None) -> dict[str, Any]:
        fallback = "internal" if self.status >= 500 else "invalid-request"
        slug = self.kind or _DEFAULT_TYPE.get(self.status, fallback)
        document: dict[str, Any] = {
            "type": problem_type_uri(slug),
            "title": PROBLEM_TYPES.get(slug) or _reason(self.status),
            "status": self.status,
            "detail": self.detail,
        }
        if self.field is not None:
            document["field"] = self.field
        if self.limit is not None:
            document["limit"] = self.limit
        if instance is not None:
            document["instance"] = instance
        document.update(self.extra)
        return document

    def response(self, instance: str | None = None) -> web.Response:
        return web.Response(
            status=self.status,
            text=_dumps(self.body(instance)),
            content_type=PROBLEM_JSON,
            headers=self.headers,
        )


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _dumps(data: Any) -> str:
    # Timelines carry timestamps and ClickHouse values that json.dumps does not know.
    return json.dumps(data, default=str)


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(
        data, status=status, dumps=functools.partial(json.dumps, default=str), headers=headers
    )


def error(status: int, message: str, as_json: bool = True) -> web.Response:
    """An error answer for code that returns rather than raises (problem+json either way; the
    as_json flag is kept for the callers that still pass it)."""
    return Problem(status, message).response()


@web.middleware
async def problems(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error as problem+json: a raised Problem, aiohttp's own answers (404 for an unknown
    path, 405, 413 past client_max_size), an error body some route still writes the old way, and
    anything unexpected (500, logged with an id the body names; never the exception's text)."""
    try:
        response = await handler(request)
    except Problem as exc:
        return exc.response(request.path)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise  # redirects: a form's 303 is an answer, not an error
        return _converted(exc.status, exc.content_type, exc.text, dict(exc.headers), request.path)
    except (asyncio.CancelledError, KeyboardInterrupt):
        raise
    except Exception:
        incident = uuid.uuid4().hex[:12]
        log.exception("unexpected error on %s %s (incident %s)", request.method, request.path, incident)
        return Problem(500, f"unexpected error (incident {incident}, in the gateway's log)").response(
            request.path
        )
    if (
        response.status >= 400
        and isinstance(response, web.Response)
        and not response.prepared
        and response.content_type in ("application/json", "text/plain")
    ):
        return _converted(response.status, response.content_type, response.text, {}, request.path)
    return response


_HOP_HEADERS = frozenset({"content-type", "content-length"})


def _converted(
    status: int, content_type: str, text: str | None, headers: dict[str, str], instance: str
) -> web.Response:
    detail, field, limit = text or _reason(status), None, None
    extra: dict[str, Any] = {}
    if content_type == "application/json" and text:
        try:
            body = json.loads(text)
        except ValueError:
            body = None
        if isinstance(body, dict):
            detail = str(body.get("error") or body.get("detail") or detail)
            field = body.get("field")
            limit = body.get("limit")
            if "errors" in body:
                extra["errors"] = body["errors"]
                if not body.get("error"):
                    detail = f"{len(body['errors'])} invalid item(s): see errors"
    kept = {k: v for k, v in headers.items() if k.lower() not in _HOP_HEADERS}
    return Problem(status, detail, field=field, limit=limit, headers=kept, extra=extra).response(instance)
