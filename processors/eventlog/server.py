"""Read-only HTTP queries on the event log, served by the process that owns the engine."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from processors.eventlog import queries
from processors.eventlog.analyst import READONLY_SETTINGS, analyst_query_problem
from processors.eventlog.engine import ClickHouseWorker
from processors.http_guard import host_allowed

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


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


def build_query_app(clickhouse: ClickHouseWorker, database: str) -> web.Application:
    routes = web.RouteTableDef()

    @routes.get("/healthz")
    async def healthz(request: web.Request) -> web.Response:
        await clickhouse.call(lambda c: c.command("SELECT 1"))
        return web.json_response({"ok": True})

    @routes.get("/jobs/{job_id}")
    async def job(request: web.Request) -> web.Response:
        job_id = request.match_info["job_id"]
        return web.json_response(await clickhouse.call(queries.job_timeline, database, job_id))

    @routes.get("/summary")
    async def summary(request: web.Request) -> web.Response:
        since = int(request.query.get("since_ms", "0"))
        return web.json_response(await clickhouse.call(queries.summary, database, since))

    @routes.post("/latencies")
    async def latencies(request: web.Request) -> web.Response:
        body = await request.json()
        ids = [str(i) for i in body.get("job_ids", [])]
        return web.json_response(await clickhouse.call(queries.job_latencies, database, ids))

    @routes.post("/query")
    async def query(request: web.Request) -> web.Response:
        body = await request.json()
        sql = str(body.get("sql", ""))
        if problem := analyst_query_problem(sql):
            raise web.HTTPBadRequest(text=problem)
        result = await clickhouse.call(lambda c: c.query(sql, settings=READONLY_SETTINGS))
        rows: list[list[Any]] = [[_plain(v) for v in row] for row in result.result_rows]
        return web.json_response({"columns": list(result.column_names), "rows": rows})

    app = web.Application(middlewares=[_local_callers_only])
    app.add_routes(routes)
    return app


def _plain(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
