"""What a request must be for the gateway to answer it: addressed to this gateway (Host), from
this site when it writes (Origin), and not too large. The host and origin rule itself is
processors/http_guard.py, shared with the event-log sink's query endpoint."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway.web.resources import BOUND_HOST
from gateway.web.responses import error
from processors.http_guard import host_allowed, same_origin

# aiohttp answers 413 itself once a body passes this (client_max_size), for JSON and forms alike.
MAX_BODY_BYTES = 5 * 1024 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def host_allowlist(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bound to loopback, answer only requests whose Host names loopback or the bound address: a
    page on another site that rebinds its own name to 127.0.0.1 sends that name and is refused."""
    if not host_allowed(request.headers.get("Host"), request.app[BOUND_HOST]):
        return error(403, "this gateway answers only requests addressed to loopback (Host header)")
    return await handler(request)


def from_this_site(request: web.Request) -> bool:
    """Refuse writes posted by another site's page in a reviewer's browser."""
    return same_origin(request.headers.get("Origin"), request.host)
