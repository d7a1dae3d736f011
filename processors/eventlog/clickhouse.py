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
from processors.job_states import LIFECYCLE, JobState

EVENTS_TABLE = "pipeline_events"
# One row per job: its current state and the facts the job-level figures count (job_view_ddl).
JOB_VIEW = "job_latest"

EVENT_COLUMNS = [
    "event_id", "job_id", "stage", "state", "at", "duration_ms", "reason", "detail",
    "attempt", "attributes", "submitted_at", "worker",
]  # fmt: skip


# The table's layout generation; a table of an older one is migrated on connect (see _migrate).
LAYOUT_MARK = "ReplacingMergeTree(ver)"


def ddl(database: str, ttl_days: int = 0, table: str = EVENTS_TABLE) -> list[str]:
    # ttl_days 0: events are kept for ever.
    ttl = f"\n        TTL toDateTime(at) + INTERVAL {int(ttl_days)} DAY" if ttl_days > 0 else ""
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
            ver UInt64 MATERIALIZED
                toUInt64(9223372036854775807) - toUInt64(toUnixTimestamp64Milli(at))
        ) ENGINE = ReplacingMergeTree(ver)
        PARTITION BY toYYYYMM(at)
        ORDER BY (job_id, event_id){ttl}""",
    ]


def job_view_ddl(database: str) -> str:
    """The latest-state-per-job view: a plain view (no storage of its own), so it is exact the
    moment an event lands, needs no backfill or migration, and reads the same on chDB and a
    server; OR REPLACE so a connection always installs the current definition.

    Each column is the one home of a per-job rule the named SQL counts (docs/analytics.md). No
    alias repeats a column's name (job_state, first_submitted_at): in ClickHouse an alias shadows
    the column in every other expression of the SELECT."""
    lifecycle = "[" + ",".join(f"'{s}'" for s in LIFECYCLE) + "]"
    ranks = "[" + ",".join(str(i + 1) for i in range(len(LIFECYCLE))) + "]"
    # The inner SELECT works each event out once; attributes are looked up only on the events of
    # the stage that writes them (an `if` evaluates its branch only where it holds), which is
    # most of the view's cost over millions of events.
    return f"""CREATE OR REPLACE VIEW {database}.{JOB_VIEW} AS
        SELECT job_id,
            -- published if it ever was, else the latest lifecycle state by time, then by
            -- lifecycle order (job_states.current_state); '' for a job with markers only
            if(max(is_published), '{JobState.PUBLISHED}',
               argMaxIf(state, toUnixTimestamp64Milli(at) * 16 + rank, rank > 0)) AS job_state,
            min(at) AS first_at,
            max(at) AS last_at,
            min(submitted_at) AS first_submitted_at,
            max(is_published) AS published,
            if(published, dateDiff('millisecond', minIf(submitted_at, is_published),
                                   maxIf(at, is_published)), NULL) AS end_to_end_ms,
            anyIf(e_sku, e_sku != '') AS sku,
            anyIf(e_campaign, e_campaign != '') AS campaign,
            argMaxIf(e_template, at, e_template != '') AS template,
            argMaxIf(e_model, at, e_model != '') AS model,
            argMaxIf(e_backend, at, e_backend != '') AS backend,
            argMaxIf(reason, at, state = '{JobState.FAILED}') AS failure_reason,
            max(attempt) AS attempts,
            -- the quality gate: every verdict, and the first attempt's candidates (variants)
            countIf(is_verdict) AS verdicts,
            countIf(is_rejected) AS rejected_verdicts,
            max(is_verdict AND attempt = 0) AS first_scored,
            max(is_verdict AND attempt = 0 AND state = 'completed' AND NOT is_rejected) AS first_passed,
            sumIf(e_variants, is_verdict AND attempt = 0) AS first_candidates,
            -- a rejected verdict means every variant failed (the best one is chosen); a passed one
            -- names how many failed (events older than that attribute: none counted)
            sumIf(if(is_rejected, e_variants, e_rejected_variants), is_verdict AND attempt = 0)
                AS first_rejected_candidates,
            max(stage = 'quality' AND state = '{JobState.RETRY}') AS quality_retried,
            max(state = '{JobState.RETRY}') AS retried,
            max(state = '{JobState.IN_REVIEW}') AS needed_person,
            countIf(is_generation) AS generations,
            max(e_fell_back) AS fell_back,
            sumIf(e_variants, is_generation) AS images_generated,
            sum(e_gpu_ms) / 1000 AS gpu_seconds,
            sum(e_cpu_ms) / 1000 AS cpu_seconds,
            sum(e_api_calls) AS api_calls,
            countIf(state = '{JobState.DEAD_LETTERED}') AS dead_letters
        FROM (
            SELECT job_id, stage, state, at, submitted_at, attempt, reason,
                transform(state, {lifecycle}, {ranks}, 0) AS rank,
                state = '{JobState.PUBLISHED}' AS is_published,
                stage = 'quality'
                    AND (state IN ('completed', 'retry')
                         OR (state = 'failed' AND reason = 'quality_rejection'))
                    AS is_verdict,
                is_verdict AND (state = 'retry' OR reason = 'quality_rejection'
                                OR attributes['needs_review'] = 'true') AS is_rejected,
                stage = 'generate' AND state = 'running' AS is_generation,
                if(is_verdict OR is_generation,
                   toUInt32OrDefault(attributes['variants'], toUInt32(1)), 0) AS e_variants,
                if(is_verdict, toUInt32OrZero(attributes['rejected_variants']), 0) AS e_rejected_variants,
                if(stage = 'intake', attributes['sku'], '') AS e_sku,
                if(stage = 'intake', attributes['campaign'], '') AS e_campaign,
                if(stage = 'prompt', attributes['template'], '') AS e_template,
                if(stage IN ('prompt', 'generate'), attributes['model'], '') AS e_model,
                if(stage IN ('prompt', 'generate'), attributes['backend'], '') AS e_backend,
                if(is_generation, attributes['fell_back_from'] != '', 0) AS e_fell_back,
                if(is_generation, toFloat64OrZero(attributes['gpu_ms']), 0) AS e_gpu_ms,
                if(is_generation, toFloat64OrZero(attributes['cpu_ms']), 0) AS e_cpu_ms,
                if(is_generation, toUInt32OrZero(attributes['api_calls']), 0) AS e_api_calls
            FROM {database}.{EVENTS_TABLE} FINAL
        )
        GROUP BY job_id"""


def _migrate(client: Client, database: str, ttl_days: int) -> None:
    """A table made by an older layout (no version column) is copied into the current one and
    swapped in place, so existing event logs keep their history."""
    engine = client.command(
        "SELECT engine_full FROM system.tables WHERE database = {db:String} AND name = {t:String}",
        parameters={"db": database, "t": EVENTS_TABLE},
    )
    if not engine or LAYOUT_MARK in str(engine):
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
    _migrate(client, settings.clickhouse.database, ttl_days)
    client.command(job_view_ddl(settings.clickhouse.database))
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
