"""Generations, kept apart as events arrive: the narrow table compute_usage.sql reads.

A generation's compute lives in its event's `attributes` map. Summing it over the events table
means decompressing the map of every event (generations sit in every granule, so PREWHERE cannot
skip any), which was most of that query's engine CPU over ten million events. A materialized view
copies each generation (generate's `running` event, the events table's `is_generation` rule) into
`generations` as plain columns; a query reads a fifth of the rows and none of the maps.

Like the events table it is a ReplacingMergeTree on (job_id, event_id) whose version makes the
earliest copy win, so FINAL reads each generation once whatever was inserted twice (a redelivered
batch, a backfill that overlaps live inserts).
"""

from __future__ import annotations

import hashlib

from clickhouse_connect.driver.client import Client

from processors.eventlog.derived import ensure_fed_table
from processors.eventlog.job_facts import EARLIEST_COPY_WINS, EVENT_FLAGS, EVENTS_TABLE, ttl_clause

GENERATIONS_TABLE = "generations"
GENERATIONS_VIEW = "generations_mv"


def _select(database: str) -> str:
    return f"""SELECT event_id, job_id, at,
    attributes['backend'] AS backend,
    attributes['model'] AS model,
    variants,
    toFloat64OrZero(attributes['gpu_ms']) AS gpu_ms,
    toFloat64OrZero(attributes['cpu_ms']) AS cpu_ms,
    toUInt32OrZero(attributes['api_calls']) AS api_calls
FROM {database}.{EVENTS_TABLE}
WHERE is_generation"""


def _table_ddl(database: str, ttl_days: int, comment: str) -> str:
    return f"""CREATE TABLE {database}.{GENERATIONS_TABLE} (
    event_id String,
    job_id String,
    at DateTime64(3, 'UTC'),
    backend LowCardinality(String),
    model LowCardinality(String),
    variants UInt32,
    gpu_ms Float64,
    cpu_ms Float64,
    api_calls UInt32,
    ver UInt64 MATERIALIZED {EARLIEST_COPY_WINS}
) ENGINE = ReplacingMergeTree(ver)
PARTITION BY toYYYYMM(at)
ORDER BY (job_id, event_id){ttl_clause("at", ttl_days)}
COMMENT '{comment}'"""


# Stored as the table's comment: a table made under another layout, or under other rules for
# which events are generations and how many images each made (the rules are applied as rows are
# copied, so old rows keep the rules they were copied under), is rebuilt from the events.
LAYOUT = (
    "lightbox generations 1 "
    + hashlib.sha256(
        (
            _table_ddl("db", 0, "") + _select("db") + EVENT_FLAGS["is_generation"] + EVENT_FLAGS["variants"]
        ).encode()
    ).hexdigest()[:12]
)


def ensure_generations(client: Client, database: str, ttl_days: int) -> bool:
    """The table and the view that fills it; a table missing or of another layout is (re)built
    from the events already stored (the view first, so nothing inserted meanwhile is missed; what
    lands twice is one row under FINAL). True if it was (re)built."""
    return ensure_fed_table(
        client,
        database,
        table=GENERATIONS_TABLE,
        view=GENERATIONS_VIEW,
        mark=LAYOUT,
        create_table=_table_ddl(database, ttl_days, LAYOUT),
        select=_select(database),
        columns="event_id, job_id, at, backend, model, variants, gpu_ms, cpu_ms, api_calls",
    )
