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
from processors.eventlog.generations import GENERATIONS_TABLE, ensure_generations
from processors.eventlog.job_facts import (
    EARLIEST_COPY_WINS,
    EVENTS_TABLE,
    FACTS_TABLE,
    JOB_VIEW,
    ensure_job_facts,
    event_flag_statements,
    ttl_clause,
    ttl_expression,
)

__all__ = ["EVENTS_TABLE", "EVENT_COLUMNS", "JOB_VIEW", "connect", "connect_analyst", "ddl"]

EVENT_COLUMNS = [
    "event_id", "job_id", "stage", "state", "at", "duration_ms", "reason", "detail",
    "attempt", "attributes", "submitted_at", "worker",
]  # fmt: skip


# The table's layout generation; a table of an older one is migrated on connect (see _migrate).
LAYOUT_MARK = "ReplacingMergeTree(ver)"


def ddl(database: str, ttl_days: int = 0, table: str = EVENTS_TABLE) -> list[str]:
    return [
        f"CREATE DATABASE IF NOT EXISTS {database}",
        # ReplacingMergeTree on event_id: a replayed batch re-emits identical ids, and FINAL
        # (or argMax) reads see each event once. The version column makes the EARLIEST copy win:
        # a batch redone after a crash re-sends its events with a later `at`, and without it the
        # redelivered `running` of a job could land after its `published`. Partitioned by month
        # and ordered for per-job and per-stage time reads.
        f"""CREATE TABLE IF NOT EXISTS {database}.{table} (
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
            worker String,
            ver UInt64 MATERIALIZED {EARLIEST_COPY_WINS}
        ) ENGINE = ReplacingMergeTree(ver)
        PARTITION BY toYYYYMM(at)
        ORDER BY (job_id, event_id){ttl_clause("at", ttl_days)}""",
    ]


def _engine_full(client: Client, database: str, table: str) -> str:
    """The table's engine clause as ClickHouse states it ('' for no such table)."""
    found = client.command(
        "SELECT engine_full FROM system.tables WHERE database = {db:String} AND name = {t:String}",
        parameters={"db": database, "t": table},
    )
    return str(found) if found else ""


def _migrate(client: Client, database: str, ttl_days: int) -> None:
    """A table made by an older layout (no version column) is copied into the current one and
    swapped in place, so existing event logs keep their history."""
    engine = _engine_full(client, database, EVENTS_TABLE)
    if not engine or LAYOUT_MARK in engine:
        return
    staging = f"{EVENTS_TABLE}_migrating"
    client.command(f"DROP TABLE IF EXISTS {database}.{staging}")
    client.command(ddl(database, ttl_days, staging)[1])
    columns = ", ".join(EVENT_COLUMNS)
    client.command(
        f"INSERT INTO {database}.{staging} ({columns}) SELECT {columns} FROM {database}.{EVENTS_TABLE}"
    )
    client.command(f"EXCHANGE TABLES {database}.{staging} AND {database}.{EVENTS_TABLE}")
    client.command(f"DROP TABLE {database}.{staging}")


def connect(settings: Settings) -> Client:
    """A client that may write: the table is created if missing (every new connection, so a server
    that came back empty gets it again)."""
    client = clickhouse_connect.get_client(dsn=settings.clickhouse_dsn)
    ttl_days = settings.clickhouse.ttl_days
    for statement in ddl(settings.clickhouse.database, ttl_days):
        client.command(statement)
    database = settings.clickhouse.database
    _migrate(client, database, ttl_days)
    for statement in event_flag_statements(database):
        client.command(statement)
    ensure_job_facts(client, database, ttl_days)
    ensure_generations(client, database, ttl_days)
    for table, column in ((EVENTS_TABLE, "at"), (FACTS_TABLE, "last_at"), (GENERATIONS_TABLE, "at")):
        _apply_ttl(client, database, table, column, ttl_days)
    return client


def _apply_ttl(client: Client, database: str, table: str, column: str, ttl_days: int) -> None:
    """clickhouse.ttl_days on a table made before it was set or changed: CREATE ... IF NOT
    EXISTS keeps the old table's TTL, so it is altered here (dropping expired parts runs in the
    background, as ClickHouse's TTL always does)."""
    engine = _engine_full(client, database, table)
    has_ttl = " TTL " in engine
    if ttl_days > 0 and f"toIntervalDay({int(ttl_days)})" not in engine:
        client.command(f"ALTER TABLE {database}.{table} MODIFY TTL {ttl_expression(column, ttl_days)}")
    elif ttl_days <= 0 and has_ttl:
        client.command(f"ALTER TABLE {database}.{table} REMOVE TTL")


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
