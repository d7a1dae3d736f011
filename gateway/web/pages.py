"""What every HTML page of the gateway shares: who may see it, how it is rendered, the static
files, and images streamed from storage.

Pages are for people in a browser: without a session they are sent to log in (never answered
with a problem+json body), and a wrong role gets a page saying which roles may. Every page is
sent with a Content-Security-Policy that allows scripts, styles and images from this site only
(no inline script: the pages' scripts are files under static/), may not be framed (a framed
review page could be clicked through by another site), and is not cached.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import urllib3
from aiohttp import web
from minio.error import MinioException, S3Error

from gateway.web.auth import Identity, Role, csrf_token, has_session, identity_of
from gateway.web.resources import PAGES, STORE
from gateway.web.responses import Handler, Problem
from processors.storage import is_missing

STATIC_DIR = Path(__file__).with_name("static")
# Storage down or refusing: a page says so (503) rather than failing as a 500.
STORAGE_ERRORS = (MinioException, urllib3.exceptions.HTTPError, OSError)
CHUNK_BYTES = 256 * 1024

PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
IMAGE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "private, no-store",
    "Content-Security-Policy": "default-src 'none'; sandbox",
}

# Who sees which page (admin sees all): the nav shows a person only the pages they may open.
REVIEWERS = (Role.REVIEWER,)
ANALYSTS = (Role.ANALYST, Role.SRE)
JOB_READERS = (Role.REVIEWER, Role.ANALYST, Role.SRE, Role.SUBMITTER)


@dataclass(frozen=True)
class NavLink:
    href: str
    label: str
    roles: tuple[Role, ...]


NAV = (
    NavLink("/review", "Review", REVIEWERS),
    NavLink("/dashboard", "Dashboard", ANALYSTS),
)

routes = web.RouteTableDef()
routes.static("/static", STATIC_DIR)


def safe_next(target: str | None, default: str = "/review") -> str:
    """Where to go after logging in: a path on this site only (never //host or a scheme), so a
    login link cannot bounce a reviewer to another site."""
    if not target:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return default
    if "\\" in target or any(ord(ch) < 0x20 for ch in target):
        return default
    return target


def login_url(request: web.Request) -> str:
    return f"/login?next={quote(request.path_qs, safe='')}"


class PageError(Exception):
    """A page that cannot be shown: answered as an HTML page saying why (see `page`)."""

    def __init__(self, status: int, title: str, message: str, back_url: str = "") -> None:
        super().__init__(message)
        self.status, self.title, self.message, self.back_url = status, title, message, back_url


def storage_unavailable(exc: BaseException) -> PageError:
    """What a page says when object storage cannot answer (or holds a record it cannot read)."""
    return PageError(503, "Storage cannot answer", f"object storage could not be read: {str(exc)[:200]}")


def page(handler: Handler) -> Handler:
    """A route a browser opens: a PageError, or a Problem raised on its way (a form's CSRF token
    refused, a dependency down), is answered as an HTML page, not problem+json; no identity at
    all sends the browser to log in. Returned, not raised: the problems middleware turns every
    raised HTTP error into problem+json."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except PageError as exc:
            return _error(request, exc.status, exc.title, exc.message, exc.back_url)
        except Problem as exc:
            if exc.status == 401:
                raise web.HTTPSeeOther(login_url(request)) from None
            return _error(request, exc.status, str(exc.body()["title"]), exc.detail)

    return wrapped


def page_identity(request: web.Request, *roles: Role) -> Identity:
    """The logged-in identity if it may see this page. A browser without a session is sent to
    log in (and back here after); one with another role gets a 403 page."""
    identity = identity_of(request)
    if identity is None:
        raise web.HTTPSeeOther(login_url(request))
    if not identity.may(*roles):
        allowed = ", ".join(sorted({str(r) for r in (*roles, Role.ADMIN)}))
        detail = f"{identity.name} has role {identity.role}; this page is for: {allowed}."
        raise PageError(403, "Not for your role", detail)
    return identity


def render(request: web.Request, template: str, status: int = 200, **context: Any) -> web.Response:
    identity = identity_of(request)
    nav = [
        {"href": link.href, "label": link.label, "current": request.path.startswith(link.href)}
        for link in NAV
        if identity is not None and identity.may(*link.roles)
    ]
    html = (
        request.app[PAGES]
        .get_template(template)
        .render(
            identity=identity,
            # Only a session has a CSRF token; a bearer-token client gets the page without one.
            csrf_token=csrf_token(request) if has_session(request) else "",
            nav=nav,
            **context,
        )
    )
    return web.Response(text=html, status=status, content_type="text/html", headers=PAGE_HEADERS)


def _error(request: web.Request, status: int, title: str, message: str, back_url: str = "") -> web.Response:
    return render(request, "error.html", status=status, title=title, message=message, back_url=back_url)


def score_chips(scores: dict[str, float]) -> list[tuple[str, str]]:
    """Scores as the pages show them, by name: a measure in pixels (512) as a whole number, a
    score (0.41) to three places."""
    return [
        (name, f"{value:.0f}" if abs(value) >= 10 and float(value).is_integer() else f"{value:.3f}")
        for name, value in sorted(scores.items())
    ]


def sniff_image(data: bytes) -> str:
    """The image type the bytes are, never what the key or stored metadata claims."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"


async def stream_image(request: web.Request, key: str, what: str) -> web.StreamResponse:
    """Stream one stored object to the browser in chunks (a large image is never held whole),
    typed by sniffing its first bytes; 404 page when it is gone."""
    store = request.app[STORE]
    try:
        upstream = await asyncio.to_thread(store.client.get_object, store.bucket, key)
    except S3Error as exc:
        if not is_missing(exc):
            raise PageError(503, "Storage cannot answer", f"{what} ({key}): {exc.code}") from None
        raise PageError(404, "Image not found", f"{what} ({key}) is not in storage.") from None
    except STORAGE_ERRORS as exc:
        raise PageError(503, "Storage cannot answer", f"{what} ({key}): {str(exc)[:200]}") from None
    try:
        chunk = await asyncio.to_thread(upstream.read, CHUNK_BYTES)
        response = web.StreamResponse(headers=IMAGE_HEADERS)
        response.content_type = sniff_image(chunk)
        length = upstream.headers.get("Content-Length")
        if length and length.isdigit():
            response.content_length = int(length)
        await response.prepare(request)
        while chunk:
            await response.write(chunk)
            chunk = await asyncio.to_thread(upstream.read, CHUNK_BYTES)
        await response.write_eof()
        return response
    finally:
        upstream.close()
        upstream.release_conn()
