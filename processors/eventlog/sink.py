"""The event-log sink: pipeline.events → ClickHouse, in batches, committed after the insert.

With the embedded engine this process owns chDB, so it also answers queries over HTTP for the CLI
and the dashboard (server.py). Every ClickHouse call runs on one dedicated thread (engine.py).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, ClassVar

from aiohttp import web

from processors.eventlog.clickhouse import EVENT_COLUMNS, EVENTS_TABLE, connect
from processors.eventlog.engine import ClickHouseWorker
from processors.eventlog.server import build_query_app
from processors.runtime import BatchStage, InputRecord, Outcome
from schemas.topics import Topic


def _row(event: dict[str, Any]) -> list[Any]:
    row = [event[c] for c in EVENT_COLUMNS]
    for i, column in enumerate(EVENT_COLUMNS):
        if column in ("at", "submitted_at") and isinstance(row[i], dt.datetime):
            row[i] = row[i].astimezone(dt.UTC)
    return row


class EventLogSink(BatchStage):
    name: ClassVar[str] = "eventlog"
    inputs: ClassVar[tuple[Topic, ...]] = (Topic.PIPELINE_EVENTS,)
    outputs: ClassVar[tuple[Topic, ...]] = ()
    singleton: ClassVar[bool] = True

    async def start(self) -> None:
        settings = self.ctx.settings
        self.database = settings.clickhouse.database
        self.clickhouse = ClickHouseWorker(lambda: connect(settings))
        await self.clickhouse.call(lambda client: None)  # fail fast on a bad DSN or URL
        self._runner: web.AppRunner | None = None
        if settings.clickhouse.query_port:
            app = build_query_app(self.clickhouse, self.database)
            self._runner = web.AppRunner(app, access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", settings.clickhouse.query_port)
            await site.start()
            self.ctx.log.info("event-log queries on http://127.0.0.1:%d", settings.clickhouse.query_port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        self.clickhouse.close()

    async def handle_batch(self, records: list[InputRecord]) -> list[Outcome]:
        rows = [_row(r.value) for r in records]
        table = f"{self.database}.{EVENTS_TABLE}"
        await self.clickhouse.call(lambda c: c.insert(table, rows, column_names=EVENT_COLUMNS))
        # The sink records no events of its own: an event about writing events would loop.
        return [Outcome() for _ in records]
