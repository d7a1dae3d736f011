"""Read-only HTTP queries on the event log, served by the process that owns the engine.

Queries never run on the sink's insert connection (engine.py): the service queries (a job's
timeline, the summary, health) have a lane of their own, and analyst SQL another, read-only and
bounded (analyst.py). When every analyst connection is busy a new analyst query is refused at
once with 429 rather than queued: a queue of slow queries would only move the wait elsewhere.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from processors.eventlog import queries
from processors.eventlog.analyst import (
    AnalystLimits,
    AnalystQueryFailed,
    AnalystQueryRefused,
    analyst_query_problem,
    engine_table_functions,
    run_analyst_query,
)
from processors.eventlog.engine import ClickHouseLane
from processors.http_guard import host_allowed

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class QueryLanes:
    """Where the endpoint's queries run: never the sink's ingest lane."""

    queries: ClickHouseLane
    analyst: ClickHouseLane
    limits: AnalystLimits
    running: int = 0  # analyst queries in flight
    _table_functions: frozenset[str] | None = field(default=None, repr=False)

    async def table_functions(self) -> frozenset[str]:
        if self._table_functions is None:
            self._table_functions = await self.analyst.call(engine_table_functions)
        return self._table_functions


@web.middleware
async def _local_callers_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    # The sink binds 127.0.0.1; processors/http_guard.py says why the Host header decides.
    if not host_allowed(request.headers.get("Host")):
        raise web.HTTPForbidden(
            text="the event-log endpoint answers only loopback Host names (127.0.0.1, localhost, [::1])"
        )
    # A cross-site no-cors POST can only send form or text content types: requiring JSON keeps
    # another site's page in a local browser from running queries here.
    if request.method == "POST" and request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(text="POST bodies must be Content-Type: application/json")
    return await handler(request)


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise web.HTTPBadRequest(text=f"the body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="the body must be a JSON object")
    return body


def build_query_app(lanes: QueryLanes, database: str) -> web.Application:
    routes = web.RouteTableDef()

    @routes.get("/healthz")
    async def healthz(request: web.Request) -> web.Response:
        await lanes.queries.call(lambda c: c.command("SELECT 1"))
        return web.json_response({"ok": True})

    @routes.get("/jobs/{job_id}")
    async def job(request: web.Request) -> web.Response:
        job_id = request.match_info["job_id"]
        return web.json_response(await lanes.queries.call(queries.job_timeline, database, job_id))

    @routes.get("/summary")
    async def summary(request: web.Request) -> web.Response:
        try:
            since = int(request.query.get("since_ms", "0"))
        except ValueError:
            return _error(400, "since_ms must be epoch milliseconds")
        return web.json_response(await lanes.queries.call(queries.summary, database, since))

    @routes.post("/latencies")
    async def latencies(request: web.Request) -> web.Response:
        body = await _json_body(request)
        ids = [str(i) for i in body.get("job_ids", [])]
        return web.json_response(await lanes.queries.call(queries.job_latencies, database, ids))

    @routes.post("/states")
    async def states(request: web.Request) -> web.Response:
        body = await _json_body(request)
        ids = [str(i) for i in body.get("job_ids", [])]
        return web.json_response(await lanes.queries.call(queries.job_states, database, ids))

    @routes.post("/jobs/list")
    async def list_jobs(request: web.Request) -> web.Response:
        body = await _json_body(request)
        try:
            filters = queries.JobFilter.from_json(body)
        except (TypeError, ValueError) as exc:
            return _error(400, str(exc))
        return web.json_response(await lanes.queries.call(queries.list_jobs, database, filters))

    @routes.post("/query")
    async def query(request: web.Request) -> web.Response:
        body = await _json_body(request)
        sql = body.get("sql")
        if not isinstance(sql, str):
            return _error(400, 'expected {"sql": "<one read-only statement>"}')
        # Refused from its text before it waits for anything.
        if problem := analyst_query_problem(sql, lanes.limits.max_query_chars):
            return _error(400, problem)
        if lanes.running >= lanes.analyst.threads:
            return _error(
                429,
                f"{lanes.running} analyst queries are running (clickhouse.analyst_concurrency); "
                "try again when one has finished",
            )
        lanes.running += 1
        try:
            table_functions = await lanes.table_functions()
            result = await lanes.analyst.call(run_analyst_query, sql, lanes.limits, table_functions)
        except AnalystQueryRefused as exc:
            return _error(400, str(exc))
        except AnalystQueryFailed as exc:
            return _error(422, str(exc), limit=exc.limit)
        finally:
            lanes.running -= 1
        rows: list[list[Any]] = [[_plain(v) for v in row] for row in result["rows"]]
        return web.json_response({"columns": result["columns"], "rows": rows})

    app = web.Application(middlewares=[_local_callers_only])
    app.add_routes(routes)
    return app


def _plain(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
