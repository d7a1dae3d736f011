"""ClickHouse through clickhouse-connect: the embedded engine (chDB) by default, a server by URL.

chDB allows one engine per process, so with the embedded engine only the event-log sink opens it;
other processes query through the sink's HTTP endpoint (see server.py).
"""

from __future__ import annotations

from urllib.parse import urlsplit

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from processors.config import Settings
from processors.eventlog.analyst import AnalystLimits, analyst_session_settings

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
    """A client that may write: the table is created if missing (every new connection, so a server
    that came back empty gets it again)."""
    client = clickhouse_connect.get_client(dsn=settings.clickhouse_dsn)
    for statement in ddl(settings.clickhouse.database):
        client.command(statement)
    return client


def connect_analyst(settings: Settings) -> Client:
    """A read-only client for analyst SQL: its session carries the limits and readonly=1
    (processors/eventlog/analyst.py), so no query on it can lift them. It creates nothing."""
    limits = AnalystLimits.of(settings.clickhouse)
    return clickhouse_connect.get_client(
        dsn=settings.clickhouse_dsn, settings=analyst_session_settings(limits)
    )


def dsn_problem(settings: Settings) -> str | None:
    """Why the configured ClickHouse cannot be right whatever its state: a configuration error
    (fail at start), unlike a server that does not answer (an outage: wait)."""
    url = settings.clickhouse.url
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"clickhouse.url must be an http(s)://host:port URL, not {url!r}"
    try:
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as exc:
        return f"clickhouse.url {url!r}: {exc}"
    return None
