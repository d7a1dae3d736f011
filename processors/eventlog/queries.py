"""The questions people ask of the event log. Each returns plain JSON-able data."""

from __future__ import annotations

import datetime as dt
from typing import Any

from clickhouse_connect.driver.client import Client

from processors.eventlog.clickhouse import EVENTS_TABLE
from processors.job_states import LIFECYCLE, JobState, current_state

# The lifecycle and its order as ClickHouse sees them: SQL text built from processors/job_states,
# not a copy of it. The states are enum values, never user input, so they are safe to inline.
LIFECYCLE_SQL = "[" + ",".join(f"'{s}'" for s in LIFECYCLE) + "]"
STATE_RANK_SQL = f"indexOf({LIFECYCLE_SQL}, state)"
# The state a job is in now: latest by time, then by lifecycle rank.
CURRENT_STATE_SQL = f"argMax(state, tuple(at, {STATE_RANK_SQL}))"


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.datetime) else value


def job_timeline(client: Client, database: str, job_id: str) -> dict[str, Any]:
    rows = client.query(
        f"""SELECT stage, state, at, duration_ms, reason, detail, attempt, attributes
            FROM {database}.{EVENTS_TABLE} FINAL
            WHERE job_id = {{job_id:String}} ORDER BY at, {STATE_RANK_SQL}, stage""",
        parameters={"job_id": job_id},
    ).named_results()
    events = [{k: _iso(v) for k, v in row.items()} for row in rows]
    state = current_state(e["state"] for e in events)
    return {"job_id": job_id, "state": state, "events": events}


def summary(client: Client, database: str, since_ms: int = 0) -> dict[str, Any]:
    """Jobs by state, end-to-end latency percentiles, artifact rate, failure reasons."""
    where = "WHERE at >= fromUnixTimestamp64Milli({since:Int64})"
    params = {"since": since_ms}
    by_state = client.query(
        f"""SELECT current, count() FROM (
              SELECT job_id, {CURRENT_STATE_SQL} AS current FROM {database}.{EVENTS_TABLE} FINAL {where}
              AND has({LIFECYCLE_SQL}, state)
              GROUP BY job_id) GROUP BY current ORDER BY current""",
        parameters=params,
    ).result_rows
    latency = client.query(
        f"""SELECT count(), quantile(0.5)(ms), quantile(0.95)(ms), max(ms) FROM (
              SELECT job_id, dateDiff('millisecond', min(submitted_at), max(at)) AS ms
              FROM {database}.{EVENTS_TABLE} FINAL {where} AND state = '{JobState.PUBLISHED}'
              AND submitted_at IS NOT NULL GROUP BY job_id)""",
        parameters=params,
    ).result_rows[0]
    # Artifact rate: share of scored generations the quality gate rejected (blank, wrong size,
    # product lost...). Each quality verdict is one row.
    artifacts = client.query(
        f"""SELECT countIf(state = '{JobState.RETRY}' OR reason = 'quality_rejection'),
                   countIf(state IN ('{JobState.COMPLETED}','{JobState.RETRY}','{JobState.FAILED}'))
            FROM {database}.{EVENTS_TABLE} FINAL {where} AND stage = 'quality'""",
        parameters=params,
    ).result_rows[0]
    reasons = client.query(
        f"""SELECT stage, state, reason, count() FROM {database}.{EVENTS_TABLE} FINAL {where}
            AND reason != '' GROUP BY stage, state, reason ORDER BY count() DESC LIMIT 20""",
        parameters=params,
    ).result_rows
    stage_time = client.query(
        f"""SELECT stage, count(), sum(duration_ms), quantile(0.95)(duration_ms)
            FROM {database}.{EVENTS_TABLE} FINAL {where} GROUP BY stage ORDER BY stage""",
        parameters=params,
    ).result_rows
    rejected, scored = artifacts
    return {
        "jobs_by_state": {state: count for state, count in by_state},
        "published": latency[0],
        "latency_ms": {"p50": latency[1], "p95": latency[2], "max": latency[3]},
        "artifact_rate": (rejected / scored) if scored else 0.0,
        "quality_verdicts": scored,
        "reasons": [{"stage": s, "state": st, "reason": r, "count": c} for s, st, r, c in reasons],
        "stage_handler_ms": {
            s: {"events": n, "total_ms": total, "p95_ms": p95} for s, n, total, p95 in stage_time
        },
    }


def job_latencies(client: Client, database: str, job_ids: list[str]) -> dict[str, dict[str, float]]:
    """Per job: end-to-end ms (accepted → published) and the sum of handler time on its path."""
    rows = client.query(
        f"""SELECT job_id,
                   dateDiff('millisecond', min(submitted_at), maxIf(at, state = '{JobState.PUBLISHED}')),
                   sum(duration_ms)
            FROM {database}.{EVENTS_TABLE} FINAL
            WHERE job_id IN {{ids:Array(String)}} GROUP BY job_id""",
        parameters={"ids": job_ids},
    ).result_rows
    return {job: {"end_to_end_ms": float(e2e), "handler_ms": float(h)} for job, e2e, h in rows}


def job_states(client: Client, database: str, job_ids: list[str]) -> dict[str, str]:
    """Each known job's current lifecycle state (jobs with no lifecycle event are left out)."""
    rows = client.query(
        f"""SELECT job_id, {CURRENT_STATE_SQL} FROM {database}.{EVENTS_TABLE}
            WHERE job_id IN {{ids:Array(String)}} AND has({LIFECYCLE_SQL}, state)
            GROUP BY job_id""",
        parameters={"ids": job_ids},
    ).result_rows
    return {job: state for job, state in rows}
