"""Read-only HTTP queries on the event log, served by the process that owns the engine."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from aiohttp import web

from processors.eventlog import queries

if TYPE_CHECKING:
    from processors.eventlog.sink import ClickHouseWorker

READ_ONLY = re.compile(r"^\s*(SELECT|WITH|SHOW|DESCRIBE|EXPLAIN)\b", re.IGNORECASE)
# readonly=1 refuses writes and table functions such as file() and url(), but INTO OUTFILE still
# writes a file on the engine's host, so it is refused by name.
WRITES_A_FILE = re.compile(r"\bINTO\s+OUTFILE\b", re.IGNORECASE)
READONLY_SETTINGS = {"readonly": 1}


def analyst_query_problem(sql: str) -> str | None:
    """Why this SQL may not run through the query endpoint, or None if it may."""
    if not READ_ONLY.match(sql) or ";" in sql.strip().rstrip(";"):
        return "only one read-only statement (SELECT, WITH, SHOW, DESCRIBE, EXPLAIN)"
    if WRITES_A_FILE.search(sql):
        return "INTO OUTFILE is not allowed: results come back in the response"
    return None


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

    app = web.Application()
    app.add_routes(routes)
    return app


def _plain(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
