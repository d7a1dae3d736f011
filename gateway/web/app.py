"""The gateway's HTTP app (aiohttp): `lightbox serve`.

Upstream systems that cannot speak Kafka POST catalog events here; clients read a job's timeline
and the summary (api.py); creative reviewers approve or reject held assets (review.py). Requests
are answered only when addressed to this gateway (guards.py). The app holds one producer and one
event-log reader for its lifetime (resources.py).
"""

from __future__ import annotations

from pathlib import Path

import jinja2
from aiohttp import web

from gateway.web import api, review
from gateway.web.guards import MAX_BODY_BYTES, host_allowlist
from gateway.web.resources import BOUND_HOST, JOB_SERDE, PAGES, SETTINGS, STORE, kafka_and_event_log
from processors.config import Settings
from processors.storage import ObjectStore
from schemas.serde import AvroSerde

__all__ = ["MAX_BODY_BYTES", "build_app", "serve"]


def build_app(settings: Settings, host: str = "127.0.0.1") -> web.Application:
    """host: the address the gateway is bound to. Bound to loopback, it answers only requests
    whose Host header names loopback (or that address): see processors/http_guard.py."""
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[host_allowlist])
    app[SETTINGS] = settings
    app[BOUND_HOST] = host
    app[STORE] = ObjectStore(settings.storage)
    app[JOB_SERDE] = AvroSerde("job")
    app[PAGES] = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
        # Every field on the page is catalog or reviewer text: escape all of it, always.
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    app.cleanup_ctx.append(kafka_and_event_log)
    app.add_routes(api.routes)
    app.add_routes(review.routes)
    return app


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8080) -> None:
    url = f"http://{host}:{port}"

    def announce(_: str) -> None:
        # run_app calls this only once the socket is bound, so the URL printed is one that works.
        print(f"Lightbox gateway on {url} (review page: {url}/review); Ctrl+C to stop", flush=True)

    web.run_app(build_app(settings, host), host=host, port=port, print=announce)
