"""Event-log queries from any process: straight to a ClickHouse server when one is configured,
otherwise through the event-log sink that owns the embedded engine.

A one-off caller (the CLI) just calls a query: each opens and closes its own HTTP session. A
long-lived caller (the HTTP gateway) opens the reader once (`await reader.open()`, or
`async with reader`) and every query reuses one session and one ClickHouse client until
`close()`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, Self

import aiohttp
from clickhouse_connect.driver.client import Client
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
        self._client: Client | None = None
        self._analyst: Client | None = None
        self._table_functions: frozenset[str] | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def _direct(self) -> bool:
        return not self.settings.uses_embedded_clickhouse

    def _server(self) -> Client:
        # Connected on first use, not at construction: a gateway starts even while ClickHouse
        # is down, and answers 503 until it is back.
        if self._client is None:
            self._client = connect(self.settings)
        return self._client

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
        for client in (self._client, self._analyst):
            if client is not None:
                client.close()
        self._client = self._analyst = None

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
            return self._direct_call(queries.job_timeline, job_id)
        return await self._get(f"/jobs/{job_id}")

    async def summary(self, since_ms: int = 0) -> dict[str, Any]:
        if self._direct:
            return self._direct_call(queries.summary, since_ms)
        return await self._get("/summary", since_ms=str(since_ms))

    async def latencies(self, job_ids: list[str]) -> dict[str, dict[str, float]]:
        if self._direct:
            return self._direct_call(queries.job_latencies, job_ids)
        return await self._request("POST", "/latencies", json={"job_ids": job_ids})

    async def states(self, job_ids: list[str]) -> dict[str, str]:
        """Each job's current state (a service query: never queued behind analyst SQL)."""
        if self._direct:
            return self._direct_call(queries.job_states, job_ids)
        return await self._request("POST", "/states", json={"job_ids": job_ids})

    async def sql(self, sql: str) -> dict[str, Any]:
        """One analyst statement, under the analyst's limits (processors/eventlog/analyst.py)."""
        limits = AnalystLimits.of(self.settings.clickhouse)
        # Refused from its text here too, before anything is sent.
        if problem := analyst_query_problem(sql, limits.max_query_chars):
            raise QueryRefused(problem)
        if not self._direct:
            return await self._request("POST", "/query", refusals=True, json={"sql": sql})
        try:
            if self._analyst is None:
                # Its own connection, opened read-only with the limits: never the one the other
                # queries use, so a long query here holds up nothing else.
                self._analyst = connect_analyst(self.settings)
                self._table_functions = engine_table_functions(self._analyst)
            assert self._table_functions is not None
            return run_analyst_query(self._analyst, sql, limits, self._table_functions)
        except (AnalystQueryRefused, AnalystQueryFailed) as exc:
            raise QueryRefused(str(exc)) from exc
        except (OperationalError, OSError) as exc:
            raise self._unreachable(exc) from exc

    def _direct_call(self, query: Callable[..., Any], *args: Any) -> Any:
        try:
            return query(self._server(), self.database, *args)
        except (OperationalError, OSError) as exc:
            raise self._unreachable(exc) from exc

    def _unreachable(self, exc: BaseException) -> EventLogUnavailable:
        return EventLogUnavailable(f"cannot reach ClickHouse at {self.settings.clickhouse.url}: {exc}")

    async def healthy(self) -> bool:
        try:
            if self._direct:
                self._server().command("SELECT 1")
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
