"""ClickHouse through clickhouse-connect: the embedded engine (chDB) by default, a server by URL.

chDB allows one engine per process, so with the embedded engine only the event-log sink opens it;
other processes query through the sink's HTTP endpoint (see server.py).
"""

from __future__ import annotations

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from processors.config import Settings

EVENTS_TABLE = "pipeline_events"

EVENT_COLUMNS = [
    "event_id", "job_id", "stage", "state", "at", "duration_ms", "reason", "detail",
    "attempt", "attributes", "submitted_at", "worker",
]  # fmt: skip


def ddl(database: str) -> list[str]:
    return [
        f"CREATE DATABASE IF NOT EXISTS {database}",
        # ReplacingMergeTree on event_id: a replayed batch re-emits identical ids, and FINAL
        # (or argMax) reads see each event once.
        f"""CREATE TABLE IF NOT EXISTS {database}.{EVENTS_TABLE} (
            event_id String,
            job_id String,
            stage LowCardinality(String),
            state LowCardinality(String),
            at DateTime64(3, 'UTC'),
            duration_ms Float64,
            reason LowCardinality(String),
            detail String,
            attempt UInt16,
            attributes Map(String, String),
            submitted_at Nullable(DateTime64(3, 'UTC')),
            worker String
        ) ENGINE = ReplacingMergeTree
        ORDER BY (job_id, event_id)""",
    ]


def connect(settings: Settings) -> Client:
    client = clickhouse_connect.get_client(dsn=settings.clickhouse_dsn)
    for statement in ddl(settings.clickhouse.database):
        client.command(statement)
    return client
