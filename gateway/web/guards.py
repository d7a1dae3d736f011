"""What a request must be for the gateway to answer it, on every bind address: addressed to this
gateway (Host), from this site when it writes (Origin), and not too large.

A page on another site can make a browser send requests to the gateway: through DNS rebinding
(its own name re-resolved to the gateway's address, so the browser sends that name as Host) or
by posting a form. So the gateway answers only Host names it knows (loopback, the address it is
bound to, and settings.gateway.allowed_hosts), and refuses unsafe requests whose Origin is
another site. The loopback part of the rule is processors/http_guard.py, shared with the
event-log sink's query endpoint.
"""

from __future__ import annotations

from collections.abc import Iterable

from aiohttp import web

from gateway.web.resources import BOUND_HOST, SETTINGS
from gateway.web.responses import Handler, Problem
from processors.http_guard import host_name, is_loopback, same_origin

# aiohttp answers 413 itself once a body passes this (client_max_size), for JSON and forms alike.
MAX_BODY_BYTES = 5 * 1024 * 1024
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def host_permitted(host_header: str | None, bound: str, allowed: Iterable[str]) -> bool:
    """Whether the gateway answers a request with this Host header. `allowed` entries are exact
    names, or ".example.com" for that name and every name under it."""
    name = host_name(host_header)
    if name is None:
        return False
    if is_loopback(name) or name == bound.strip("[]").lower():
        return True
    for entry in allowed:
        entry = entry.strip().lower()
        if entry.startswith("."):
            if name == entry[1:] or name.endswith(entry):
                return True
        elif entry and name == entry:
            return True
    return False


@web.middleware
async def host_allowlist(request: web.Request, handler: Handler) -> web.StreamResponse:
    allowed = request.app[SETTINGS].gateway.allowed_hosts
    if not host_permitted(request.headers.get("Host"), request.app[BOUND_HOST], allowed):
        raise Problem(
            403,
            "this gateway answers only requests addressed to it by a known name (Host header: "
            "loopback, its bind address, or gateway.allowed_hosts)",
            kind="foreign-host",
        )
    return await handler(request)


@web.middleware
async def same_site_writes(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse unsafe requests a page on another site posted through a browser. Browsers send
    Origin on every cross-site POST; clients that send none (curl, scripts) are no browser."""
    if request.method in UNSAFE_METHODS and not from_this_site(request):
        detail = "writes may not be posted by another site's page (Origin header)"
        raise Problem(403, detail, kind="cross-site")
    return await handler(request)


def from_this_site(request: web.Request) -> bool:
    """Whether a write comes from this gateway's own pages (or from no browser at all)."""
    origin = request.headers.get("Origin")
    if origin == "null":  # sandboxed frames, file: pages, some redirects: never this site
        return False
    return same_origin(origin, request.host)
