"""Read-only HTTP queries on the event log, served by the process that owns the engine."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aiohttp import web

from processors.eventlog import queries

if TYPE_CHECKING:
    from processors.eventlog.sink import ClickHouseWorker

READ_ONLY = re.compile(r"^\s*(SELECT|WITH|SHOW|DESCRIBE|EXPLAIN)\b", re.IGNORECASE)
# readonly=1 refuses writes and table functions such as file() and url(), but INTO OUTFILE still
# writes a file on the engine's host. Matching "INTO <space> OUTFILE" is beaten by a comment
# between the words (INTO/**/OUTFILE, INTO--\nOUTFILE), so the word is refused wherever it
# appears, in comments and string literals too: analysts never need it.
READONLY_SETTINGS = {"readonly": 1}
# The sink binds loopback; a browser page on another site reaches it only through DNS rebinding,
# which sends that site's name as Host. Names, not addresses, are what rebinding cannot fake.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def analyst_query_problem(sql: str) -> str | None:
    """Why this SQL may not run through the query endpoint, or None if it may."""
    if not READ_ONLY.match(sql) or ";" in sql.strip().rstrip(";"):
        return "only one read-only statement (SELECT, WITH, SHOW, DESCRIBE, EXPLAIN)"
    if "OUTFILE" in sql.upper():
        return "OUTFILE may not appear anywhere in the query: results come back in the response"
    return None


def host_name(host_header: str | None) -> str | None:
    """The host part of a Host header ("[::1]:80" → "::1"), lower-cased; None if unparsable."""
    if not host_header:
        return None
    try:
        parts = urlsplit(f"//{host_header}")
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        return None
    return parts.hostname


def loopback_host(host_header: str | None) -> bool:
    return host_name(host_header) in LOOPBACK_HOSTS


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _local_callers_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not loopback_host(request.headers.get("Host")):
        raise web.HTTPForbidden(text="the event-log endpoint answers only Host 127.0.0.1, localhost or [::1]")
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
