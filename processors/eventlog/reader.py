"""Event-log queries from any process: straight to a ClickHouse server when one is configured,
otherwise through the event-log sink that owns the embedded engine."""

from __future__ import annotations

from typing import Any

import aiohttp

from processors.config import Settings
from processors.eventlog import queries
from processors.eventlog.clickhouse import connect
from processors.eventlog.server import READONLY_SETTINGS, analyst_query_problem


class EventLogUnavailable(RuntimeError):
    pass


class EventLogReader:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.database = settings.clickhouse.database
        self._base = f"http://127.0.0.1:{settings.clickhouse.query_port}"
        self._client = None if settings.uses_embedded_clickhouse else connect(settings)

    async def _get(self, path: str, **params: Any) -> Any:
        return await self._request("GET", path, params=params)

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
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
        if self._client is not None:
            return queries.job_timeline(self._client, self.database, job_id)
        return await self._get(f"/jobs/{job_id}")

    async def summary(self, since_ms: int = 0) -> dict[str, Any]:
        if self._client is not None:
            return queries.summary(self._client, self.database, since_ms)
        return await self._get("/summary", since_ms=str(since_ms))

    async def latencies(self, job_ids: list[str]) -> dict[str, dict[str, float]]:
        if self._client is not None:
            return queries.job_latencies(self._client, self.database, job_ids)
        return await self._request("POST", "/latencies", json={"job_ids": job_ids})

    async def sql(self, sql: str) -> dict[str, Any]:
        if self._client is not None:
            if problem := analyst_query_problem(sql):
                raise EventLogUnavailable(f"refused: {problem}")
            result = self._client.query(sql, settings=READONLY_SETTINGS)
            return {"columns": list(result.column_names), "rows": [list(r) for r in result.result_rows]}
        return await self._request("POST", "/query", json={"sql": sql})

    async def healthy(self) -> bool:
        try:
            if self._client is not None:
                self._client.command("SELECT 1")
            else:
                await self._get("/healthz")
        except (EventLogUnavailable, Exception):
            return False
        return True
