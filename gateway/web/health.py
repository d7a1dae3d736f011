"""Liveness, readiness and Prometheus metrics of the gateway.

/healthz answers while the process serves (no dependency is asked: a probe that restarts the
gateway because Kafka is down helps no one). /readyz asks every dependency a request needs, at
once and each within gateway.readiness_timeout_s: Kafka (broker metadata), MinIO (the bucket),
the schema registry (settings.registry.url) and the event log; 503 names the ones that failed.
/metrics: requests by route, method and status, and a latency histogram, on a registry of the
app's own (two apps in one process, as in the tests, never collide).

Readiness is asked at most once at a time and its answer kept for gateway.readiness_cache_s:
probes from many load balancers (or a flood) share one round of checks, so a hung dependency
never fills the thread pool the request handlers use with waiting checks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from gateway.web.auth import Role, require
from gateway.web.resources import EVENT_LOG, PRODUCER, SETTINGS, STORE
from gateway.web.responses import Handler, Problem, json_response

routes = web.RouteTableDef()

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
UNMATCHED = "unmatched"  # a path no route has: one label, however many such paths are tried


@dataclass
class GatewayMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.requests = Counter(
            "lightbox_gateway_requests",
            "HTTP requests answered, by route template, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "lightbox_gateway_request_seconds",
            "Time to answer an HTTP request, by route template and method",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )


METRICS = web.AppKey("metrics", GatewayMetrics)


def route_label(request: web.Request) -> str:
    # The route's template ("/v1/jobs/{job_id}"), never the raw path: one series per route.
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else UNMATCHED


@web.middleware
async def count_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    metrics, started = request.app[METRICS], time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        route = route_label(request)
        method = request.method if request.method in _METHODS else "OTHER"
        metrics.requests.labels(route, method, str(status)).inc()
        metrics.latency.labels(route, method).observe(time.perf_counter() - started)


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return json_response({"ok": True})


async def _kafka(app: web.Application, timeout_s: float) -> None:
    # list_topics asks the broker for metadata: answered only by a broker that is up.
    await asyncio.to_thread(app[PRODUCER].list_topics, None, timeout_s)


async def _storage(app: web.Application, timeout_s: float) -> None:
    store = app[STORE]
    if not await asyncio.to_thread(store.client.bucket_exists, store.bucket):
        raise RuntimeError(f"bucket {store.bucket} does not exist")


async def _registry(app: web.Application, timeout_s: float) -> None:
    url = app[SETTINGS].registry.url.rstrip("/") + "/subjects"
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as response:
        if response.status >= 500:
            raise RuntimeError(f"{url} answered {response.status}")


async def _event_log(app: web.Application, timeout_s: float) -> None:
    if not await app[EVENT_LOG].healthy():
        raise RuntimeError("the event log does not answer")


CHECKS: dict[str, Callable[[web.Application, float], Awaitable[None]]] = {
    "kafka": _kafka,
    "storage": _storage,
    "registry": _registry,
    "eventlog": _event_log,
}


async def _check(app: web.Application, name: str, timeout_s: float) -> str:
    try:
        await asyncio.wait_for(CHECKS[name](app, timeout_s), timeout_s + 0.5)
    except TimeoutError:
        return f"no answer within {timeout_s}s"
    except Exception as exc:  # any failure of a dependency is a "not ready", said in words
        return f"{type(exc).__name__}: {str(exc)[:200]}"
    return "ok"


async def _check_all(app: web.Application) -> dict[str, str]:
    timeout_s = app[SETTINGS].gateway.readiness_timeout_s
    names = list(CHECKS)
    return dict(zip(names, await asyncio.gather(*(_check(app, n, timeout_s) for n in names)), strict=True))


@dataclass
class Readiness:
    """One round of checks at a time, its answer shared by every caller that asked meanwhile and
    kept for `keep_s` after it ended."""

    keep_s: float
    rounds: int = 0  # rounds run: what the tests count
    _running: asyncio.Task[dict[str, str]] | None = None
    _answer: dict[str, str] | None = None
    _answered_at: float = 0.0

    async def results(self, app: web.Application) -> dict[str, str]:
        if self._answer is not None and time.monotonic() - self._answered_at < self.keep_s:
            return self._answer
        if self._running is None:
            self.rounds += 1
            self._running = asyncio.create_task(self._round(app))
        # shield: a caller that goes away does not cancel the round the others wait on
        return await asyncio.shield(self._running)

    async def _round(self, app: web.Application) -> dict[str, str]:
        try:
            self._answer = await _check_all(app)
            self._answered_at = time.monotonic()
            return self._answer
        finally:
            self._running = None


READINESS = web.AppKey("readiness", Readiness)


def install_readiness(app: web.Application) -> None:
    app[READINESS] = Readiness(app[SETTINGS].gateway.readiness_cache_s)


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    results = await request.app[READINESS].results(request.app)
    failing = [name for name, result in results.items() if result != "ok"]
    if failing:
        raise Problem(503, f"not ready: {', '.join(failing)}", kind="not-ready", extra={"checks": results})
    return json_response({"ready": True, "checks": results})


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    require(request, Role.SRE, Role.ANALYST)
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
