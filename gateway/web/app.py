"""The gateway's HTTP app (aiohttp): `lightbox serve`.

Upstream systems that cannot speak Kafka POST requests here and read their jobs (api.py,
jobs_api.py); creative reviewers and analysts use the pages; SREs replay jobs and scrape
/metrics (health.py). The contract is /openapi.json, readable at /docs (openapi.py).

Every request passes, outermost first: metrics (health.count_requests), the problem+json error
shape (responses.problems), the Host allowlist and the same-site rule for writes (guards.py, on
every bind address), then authentication (auth.authenticate), which sets request[auth.IDENTITY]
for the route to check with auth.require. The app holds one producer and one event-log reader
for its lifetime (resources.py).
"""

from __future__ import annotations

import ssl
from pathlib import Path

import jinja2
from aiohttp import web

from gateway.ops.tokens import TokenStore
from gateway.web import api, dashboard, health, jobpage, jobs_api, login, openapi, pages, review
from gateway.web.auth import AUTH, Authenticator, authenticate
from gateway.web.guards import MAX_BODY_BYTES, host_allowlist, same_site_writes
from gateway.web.idempotency import IdempotencyStore
from gateway.web.resources import (
    BOUND_HOST,
    JOB_SERDE,
    PAGES,
    PRESIGNER,
    SETTINGS,
    STORE,
    kafka_and_event_log,
    presigner,
)
from gateway.web.responses import problems
from processors.config import Settings
from processors.http_guard import is_loopback
from processors.storage import ObjectStore
from schemas.serde import AvroSerde

__all__ = ["MAX_BODY_BYTES", "build_app", "serve", "serve_problem"]

# The route tables: the JSON API (openapi.py documents every route of these), then the pages.
API_ROUTES = (health.routes, openapi.routes, api.routes, jobs_api.routes)
PAGE_ROUTES = (pages.routes, login.routes, review.routes, dashboard.routes, jobpage.routes)


def build_app(settings: Settings, host: str = "127.0.0.1") -> web.Application:
    """host: the address the gateway is bound to; it answers only Host headers naming loopback,
    that address, or one of gateway.allowed_hosts (guards.py)."""
    app = web.Application(
        client_max_size=MAX_BODY_BYTES,
        middlewares=[health.count_requests, problems, host_allowlist, same_site_writes, authenticate],
    )
    app[SETTINGS] = settings
    app[BOUND_HOST] = host
    store = ObjectStore(settings.storage)
    app[STORE] = store
    app[JOB_SERDE] = AvroSerde("job")
    app[PRESIGNER] = presigner(settings)
    app[AUTH] = Authenticator(settings)
    app[health.METRICS] = health.GatewayMetrics()
    health.install_readiness(app)
    app[api.IDEMPOTENCY] = IdempotencyStore(
        store, settings.kafka.topic_prefix, settings.gateway.idempotency_ttl_s
    )
    app[PAGES] = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
        # Every field on the page is catalog or reviewer text: escape all of it, always.
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    app.cleanup_ctx.append(kafka_and_event_log)
    for table in (*API_ROUTES, *PAGE_ROUTES):
        app.add_routes(table)
    return app


def serve_problem(settings: Settings, host: str) -> str | None:
    """Why the gateway must not start on this address with these settings, or None.

    Off loopback, tokens and session cookies cross a network: TLS must protect them, served by
    the gateway (gateway.tls_cert/tls_key) or by a proxy in front (gateway.behind_proxy, or
    `serve --behind-proxy`). And the Host allowlist must name what clients call it."""
    gateway = settings.gateway
    if bool(gateway.tls_cert) != bool(gateway.tls_key):
        return "gateway.tls_cert and gateway.tls_key go together: set both, or neither"
    for path in (gateway.tls_cert, gateway.tls_key):
        if path and not Path(path).expanduser().is_file():
            return f"{path} (gateway TLS) does not exist"
    if is_loopback(host):
        return None
    if not (gateway.tls_cert or gateway.behind_proxy):
        return (
            f"refusing to serve on {host} without TLS: set gateway.tls_cert and gateway.tls_key, or "
            "pass --behind-proxy (gateway.behind_proxy) when a proxy in front terminates TLS"
        )
    if not gateway.allowed_hosts:
        return (
            f"refusing to serve on {host} without gateway.allowed_hosts: name the host names clients "
            "use (the DNS-rebinding defence answers only those, loopback and the bind address)"
        )
    return None


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    gateway = settings.gateway
    if not gateway.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(Path(gateway.tls_cert).expanduser(), Path(gateway.tls_key).expanduser())
    return context


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8080) -> None:
    if problem := serve_problem(settings, host):
        raise SystemExit(f"error: {problem}")
    context = tls_context(settings)
    url = f"{'https' if context else 'http'}://{host}:{port}"
    if not TokenStore.of(settings).load():
        print(
            "no API tokens yet: every route but /healthz, /readyz and /docs will answer 401. Make one "
            "with `lightbox tokens create --name NAME --role admin`",
            flush=True,
        )

    def announce(_: str) -> None:
        # run_app calls this only once the socket is bound, so the URL printed is one that works.
        print(f"Lightbox gateway on {url} (API docs: {url}/docs); Ctrl+C to stop", flush=True)

    web.run_app(build_app(settings, host), host=host, port=port, ssl_context=context, print=announce)
