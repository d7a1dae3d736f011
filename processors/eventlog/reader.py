"""Event-log queries from any process: straight to a ClickHouse server when one is configured,
otherwise through the event-log sink that owns the embedded engine.

A one-off caller (the CLI) just calls a query: each opens and closes its own HTTP session. A
long-lived caller (the HTTP gateway) opens the reader once (`await reader.open()`, or
`async with reader`) and every query reuses one session and one ClickHouse client until
`close()`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, Self

import aiohttp
from clickhouse_connect.driver.client import Client

from processors.config import Settings
from processors.eventlog import queries
from processors.eventlog.analyst import READONLY_SETTINGS, analyst_query_problem
from processors.eventlog.clickhouse import connect

TIMEOUT = aiohttp.ClientTimeout(total=30)


class EventLogUnavailable(RuntimeError):
    pass


class EventLogReader:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.database = settings.clickhouse.database
        self._base = f"http://127.0.0.1:{settings.clickhouse.query_port}"
        self._client: Client | None = None
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
        if self._client is not None:
            self._client.close()
            self._client = None

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

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            async with (
                self._http() as session,
                session.request(method, self._base + path, **kwargs) as response,
            ):
                if response.status >= 400:
                    raise EventLogUnavailable(
                        f"event log answered {response.status}: {await response.text()}"
                    )
                return await response.json()
        except aiohttp.ClientConnectionError as exc:
            raise EventLogUnavailable(
                f"cannot reach the event-log sink at {self._base} ({exc}); is `lightbox run eventlog` "
                "(or `lightbox run all`) running?"
            ) from exc

    async def timeline(self, job_id: str) -> dict[str, Any]:
        if self._direct:
            return queries.job_timeline(self._server(), self.database, job_id)
        return await self._get(f"/jobs/{job_id}")

    async def summary(self, since_ms: int = 0) -> dict[str, Any]:
        if self._direct:
            return queries.summary(self._server(), self.database, since_ms)
        return await self._get("/summary", since_ms=str(since_ms))

    async def latencies(self, job_ids: list[str]) -> dict[str, dict[str, float]]:
        if self._direct:
            return queries.job_latencies(self._server(), self.database, job_ids)
        return await self._request("POST", "/latencies", json={"job_ids": job_ids})

    async def sql(self, sql: str) -> dict[str, Any]:
        if self._direct:
            if problem := analyst_query_problem(sql):
                raise EventLogUnavailable(f"refused: {problem}")
            result = self._server().query(sql, settings=READONLY_SETTINGS)
            return {"columns": list(result.column_names), "rows": [list(r) for r in result.result_rows]}
        return await self._request("POST", "/query", json={"sql": sql})

    async def healthy(self) -> bool:
        try:
            if self._direct:
                self._server().command("SELECT 1")
            else:
                await self._get("/healthz")
        except Exception:
            return False
        return True
