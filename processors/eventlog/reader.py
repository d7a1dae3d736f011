"""Event-log queries from any process: straight to a ClickHouse server when one is configured,
otherwise through the event-log sink that owns the embedded engine.

A one-off caller (the CLI) just calls a query: each opens and closes its own HTTP session. A
long-lived caller (the HTTP gateway) opens the reader once (`await reader.open()`, or
`async with reader`) and every query reuses one session, or one set of ClickHouse connections,
until `close()`.

No query blocks the event loop: clickhouse-connect's calls are blocking, so against a server they
run on a lane (engine.py) of a few threads, each with its own connection made once and kept; one
connection serialises its calls, so connections are never shared between threads. Analyst SQL
has a lane (and a read-only connection) of its own.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import aiohttp
from clickhouse_connect.driver.exceptions import OperationalError

from processors.config import Settings
from processors.eventlog import queries
from processors.eventlog.analyst import (
    AnalystLimits,
    AnalystQueryFailed,
    AnalystQueryRefused,
    analyst_query_problem,
    engine_table_functions,
    run_analyst_query,
)
from processors.eventlog.clickhouse import connect, connect_analyst
from processors.eventlog.engine import ClickHouseLane

# Above the analyst's max_execution_time (20 s by default), so a timeout is the engine's, named.
TIMEOUT = aiohttp.ClientTimeout(total=30)


class EventLogError(RuntimeError):
    """The event log could not answer this request; the message says why."""


class EventLogUnavailable(EventLogError):
    """The event log cannot be reached, or its engine cannot answer now."""


class QueryRefused(EventLogError):
    """Analyst SQL that may not run, or that ClickHouse stopped (a limit, a syntax error)."""


class EventLogReader:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.database = settings.clickhouse.database
        self._base = f"http://127.0.0.1:{settings.clickhouse.query_port}"
        self._lane: ClickHouseLane | None = None
        self._analyst: ClickHouseLane | None = None
        self._table_functions: frozenset[str] | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def _direct(self) -> bool:
        return not self.settings.uses_embedded_clickhouse

    def _server(self) -> ClickHouseLane:
        # Connected on first use (per thread), not at construction: a gateway starts even while
        # ClickHouse is down, and answers 503 until it is back.
        if self._lane is None:
            threads = max(1, self.settings.gateway.eventlog_threads)
            self._lane = ClickHouseLane("reader", lambda: connect(self.settings), threads)
        return self._lane

    def _analyst_lane(self) -> ClickHouseLane:
        if self._analyst is None:
            # Its own connection, opened read-only with the limits: never the one the other
            # queries use, so a long query here holds up nothing else.
            self._analyst = ClickHouseLane("reader-analyst", lambda: connect_analyst(self.settings))
        return self._analyst

    def _new_session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(timeout=TIMEOUT)

    async def open(self) -> None:
        """Keep one HTTP session for every query until close() (call inside the running loop)."""
        if self._session is None and not self._direct:
            self._session = self._new_session()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        lanes = [lane for lane in (self._lane, self._analyst) if lane is not None]
        self._lane = self._analyst = None
        for lane in lanes:
            # Waits for a query in flight: off the loop.
            await asyncio.to_thread(lane.close)

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @asynccontextmanager
    async def _http(self) -> AsyncIterator[aiohttp.ClientSession]:
        if self._session is not None:
            yield self._session
            return
        async with self._new_session() as session:
            yield session

    async def _get(self, path: str, **params: Any) -> Any:
        return await self._request("GET", path, params=params)

    async def _request(self, method: str, path: str, *, refusals: bool = False, **kwargs: Any) -> Any:
        """refusals: the endpoint answers 400/422/429 for a query it refused or stopped."""
        try:
            async with (
                self._http() as session,
                session.request(method, self._base + path, **kwargs) as response,
            ):
                if refusals and response.status in (400, 422, 429):
                    raise QueryRefused(await _error_text(response))
                if response.status >= 400:
                    raise EventLogUnavailable(
                        f"event log answered {response.status}: {await _error_text(response)}"
                    )
                return await response.json()
        except aiohttp.ClientConnectionError as exc:
            raise EventLogUnavailable(
                f"cannot reach the event-log sink at {self._base} ({exc}); is `lightbox run eventlog` "
                "(or `lightbox run all`) running?"
            ) from exc

    async def timeline(self, job_id: str) -> dict[str, Any]:
        if self._direct:
            return await self._direct_call(queries.job_timeline, job_id)
        # Quoted whole: a job id is arbitrary text ("?", "/", "%" among it), one path segment.
        return await self._get(f"/jobs/{quote(job_id, safe='')}")

    async def summary(self, since_ms: int = 0) -> dict[str, Any]:
        if self._direct:
            return await self._direct_call(queries.summary, since_ms)
        return await self._get("/summary", since_ms=str(since_ms))

    async def latencies(self, job_ids: list[str]) -> dict[str, dict[str, float]]:
        if self._direct:
            return await self._direct_call(queries.job_latencies, job_ids)
        return await self._request("POST", "/latencies", json={"job_ids": job_ids})

    async def states(self, job_ids: list[str]) -> dict[str, str]:
        """Each job's current state (a service query: never queued behind analyst SQL)."""
        if self._direct:
            return await self._direct_call(queries.job_states, job_ids)
        return await self._request("POST", "/states", json={"job_ids": job_ids})

    async def list_jobs(self, filters: queries.JobFilter) -> dict[str, Any]:
        """A page of jobs, newest first (queries.list_jobs)."""
        if self._direct:
            return await self._direct_call(queries.list_jobs, filters)
        return await self._request("POST", "/jobs/list", json=filters.to_json())

    async def sql(self, sql: str) -> dict[str, Any]:
        """One analyst statement, under the analyst's limits (processors/eventlog/analyst.py)."""
        limits = AnalystLimits.of(self.settings.clickhouse)
        # Refused from its text here too, before anything is sent.
        if problem := analyst_query_problem(sql, limits.max_query_chars):
            raise QueryRefused(problem)
        if not self._direct:
            return await self._request("POST", "/query", refusals=True, json={"sql": sql})
        try:
            lane = self._analyst_lane()
            if self._table_functions is None:
                self._table_functions = await lane.call(engine_table_functions)
            return await lane.call(run_analyst_query, sql, limits, self._table_functions)
        except (AnalystQueryRefused, AnalystQueryFailed) as exc:
            raise QueryRefused(str(exc)) from exc
        except (OperationalError, OSError) as exc:
            raise self._unreachable(exc) from exc

    async def _direct_call(self, query: Callable[..., Any], *args: Any) -> Any:
        lane = self._server()
        try:
            return await lane.call(query, self.database, *args)
        except (OperationalError, OSError) as exc:
            # The server may have restarted (and lost the table connect() creates): each thread
            # reconnects before its next query.
            lane.reset()
            raise self._unreachable(exc) from exc

    def _unreachable(self, exc: BaseException) -> EventLogUnavailable:
        return EventLogUnavailable(f"cannot reach ClickHouse at {self.settings.clickhouse.url}: {exc}")

    async def healthy(self) -> bool:
        try:
            if self._direct:
                await self._server().call(lambda client: client.command("SELECT 1"))
            else:
                await self._get("/healthz")
        except Exception:
            return False
        return True


async def _error_text(response: aiohttp.ClientResponse) -> str:
    """The endpoint's {"error": ...} message, or its body as text."""
    text = await response.text()
    try:
        body = json.loads(text)
    except ValueError:
        return text
    return str(body.get("error", text)) if isinstance(body, dict) else text
