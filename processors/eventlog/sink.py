"""The event-log sink: pipeline.events → ClickHouse, in batches, committed after the insert.

It stays up and loses nothing (ingest.py): a ClickHouse outage, embedded or server, pauses
ingestion (the batch is retried with capped backoff; nothing is committed meanwhile, nothing is
dead-lettered) and it resumes by itself; a row ClickHouse refuses is found by splitting the batch
and dead-lettered alone, with the error, while the rest of the batch goes in.

With the embedded engine this process owns chDB, so it also answers queries over HTTP for the CLI
and the dashboard (server.py). Inserts, service queries and analyst SQL each run on connections
and threads of their own (engine.py), so no query can hold up an insert.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from typing import Any, ClassVar

from aiohttp import web

from processors.config import StageSettings
from processors.eventlog.analyst import AnalystLimits
from processors.eventlog.clickhouse import (
    EVENT_COLUMNS,
    EVENTS_TABLE,
    connect,
    connect_analyst,
    dsn_problem,
)
from processors.eventlog.engine import ClickHouseLane
from processors.eventlog.ingest import Ingestor, OutageBackoff
from processors.eventlog.server import QueryLanes, build_query_app
from processors.runtime import BatchStage, InputRecord, Outcome, PermanentError
from schemas.topics import Topic

# About a second of events under full load; an idle pipeline's few still arrive within
# kafka.fetch_wait_max_ms, when the broker answers the fetch anyway.
SINK_FETCH_MIN_BYTES = 256 * 1024


def load_insert_path() -> None:
    """Import what clickhouse-connect's first insert would. It imports pandas lazily, on the first
    insert, to test whether it was handed a DataFrame, and chDB brings pandas along: about 0.8 s of
    CPU inside the first batch of events (docs/benchmarks.md). Paid at start instead."""
    with contextlib.suppress(ImportError):
        import pandas  # noqa: F401


class RefusedEvent(PermanentError):
    """ClickHouse refused this event's row (its values, not the engine's state)."""


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

    def stage_settings(self) -> StageSettings:
        stage, clickhouse = self.ctx.settings.stage, self.ctx.settings.clickhouse
        return stage.model_copy(
            update={"batch_size": clickhouse.sink_batch_size, "batch_linger_s": clickhouse.sink_linger_s}
        )

    def consumer_overrides(self) -> dict[str, Any]:
        # The sink lingers clickhouse.sink_linger_s for a batch anyway: a fetch answered for
        # every pipeline transaction's few events would cost the broker and this process a
        # round trip each, dozens a second under load, for nothing the batch needs sooner.
        return {"fetch.min.bytes": SINK_FETCH_MIN_BYTES}

    async def start(self) -> None:
        settings = self.ctx.settings
        if problem := dsn_problem(settings):
            self.ctx.log.error("configuration error, the event-log sink does not start: %s", problem)
            raise ValueError(problem)
        self.database = settings.clickhouse.database
        # clickhouse-connect logs every value it cannot encode at ERROR with a traceback; while a
        # batch is split to find a refused row that is one per try. The sink reports the row itself.
        logging.getLogger("clickhouse_connect.driver.transform").setLevel(logging.CRITICAL)
        self.ingest = ClickHouseLane("ingest", lambda: connect(settings))
        self.lanes = QueryLanes(
            queries=ClickHouseLane("queries", lambda: connect(settings)),
            analyst=ClickHouseLane(
                "analyst",
                lambda: connect_analyst(settings),
                threads=max(1, settings.clickhouse.analyst_concurrency),
            ),
            limits=AnalystLimits.of(settings.clickhouse),
        )
        self.ingestor = Ingestor(
            self.ingest,
            f"{self.database}.{EVENTS_TABLE}",
            EVENT_COLUMNS,
            OutageBackoff(settings.stage.backoff_initial_s, settings.stage.backoff_max_s),
            self.ctx.log,
        )
        load_insert_path()
        if settings.uses_embedded_clickhouse:
            # The engine is in this process: failing to open it at start is configuration (its
            # path, its permissions, another process holding it), so fail with the reason.
            await self.ingest.call(lambda client: None)
        else:
            # A server that does not answer yet is an outage, not a configuration error: the
            # first batch waits for it (ingest.py) and the queries answer 503 meanwhile.
            try:
                await self.ingest.call(lambda client: None)
            except Exception as exc:
                self.ctx.log.warning("ClickHouse at %s does not answer yet: %s", settings.clickhouse.url, exc)
        self._runner: web.AppRunner | None = None
        if settings.clickhouse.query_port:
            app = build_query_app(self.lanes, self.database)
            self._runner = web.AppRunner(app, access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", settings.clickhouse.query_port)
            await site.start()
            self.ctx.log.info("event-log queries on http://127.0.0.1:%d", settings.clickhouse.query_port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        for lane in (self.lanes.analyst, self.lanes.queries, self.ingest):
            lane.close()

    async def handle_batch(self, records: list[InputRecord]) -> list[Outcome]:
        # The sink records no events of its own: an event about writing events would loop.
        outcomes = [Outcome() for _ in records]
        rows: list[list[Any]] = []
        slots: list[int] = []
        for i, record in enumerate(records):
            try:
                rows.append(_row(record.value))
            except (KeyError, TypeError, ValueError) as exc:
                outcomes[i] = Outcome(dead_letter=RefusedEvent(f"not an event-log row: {exc!r}"))
                continue
            slots.append(i)
        report = await self.ingestor.insert(rows)
        for index, exc in report.refused.items():
            self.ctx.log.error(
                "ClickHouse refused an event; dead-lettering it: %s",
                exc,
                extra={"reason": "clickhouse_refused_row"},
            )
            outcomes[slots[index]] = Outcome(dead_letter=RefusedEvent(f"ClickHouse refused the row: {exc}"))
        return outcomes
