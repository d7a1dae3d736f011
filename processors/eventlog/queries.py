"""The questions people ask of the event log. Each returns plain JSON-able data."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, fields
from typing import Any

from clickhouse_connect.driver.client import Client

from processors.eventlog import named
from processors.eventlog.clickhouse import EVENTS_TABLE
from processors.job_states import LIFECYCLE, JobState, current_state

# The lifecycle and its order as ClickHouse sees them: SQL text built from processors/job_states,
# not a copy of it. The states are enum values, never user input, so they are safe to inline.
LIFECYCLE_SQL = "[" + ",".join(f"'{s}'" for s in LIFECYCLE) + "]"
STATE_RANK_SQL = f"indexOf({LIFECYCLE_SQL}, state)"
# The state a job is in now: published if it ever was (see job_states.FINAL), else latest by
# time, then by lifecycle rank.
CURRENT_STATE_ORDER_SQL = f"tuple(state = '{JobState.PUBLISHED}', at, {STATE_RANK_SQL})"
CURRENT_STATE_SQL = f"argMax(state, {CURRENT_STATE_ORDER_SQL})"


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
    """Jobs by state, end-to-end latency percentiles, artifact rate, first-pass yield, reasons and
    time per stage: the named SQL files' answers (named.summary), the ones the dashboard reads,
    so `lightbox summary`, GET /v1/summary and the dashboard never disagree."""
    return named.summary(client, database, since_ms)


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
        # FINAL: a redelivered copy of an event (a later `at`) must not move a job back.
        f"""SELECT job_id, {CURRENT_STATE_SQL} FROM {database}.{EVENTS_TABLE} FINAL
            WHERE job_id IN {{ids:Array(String)}} AND has({LIFECYCLE_SQL}, state)
            GROUP BY job_id""",
        parameters={"ids": job_ids},
    ).result_rows
    return {job: state for job, state in rows}


@dataclass(frozen=True)
class JobFilter:
    """Which jobs GET /v1/jobs lists, newest first, one page at a time.

    template: a template id (any version) or "id@version"; since_ms/until_ms: when the job's
    first event was recorded, from inclusive, until exclusive; after: the (created_ms, job_id)
    of the last job of the previous page (keyset paging: a page never repeats or skips a job
    while new ones arrive)."""

    state: str | None = None
    sku: str | None = None
    campaign: str | None = None
    template: str | None = None
    model: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None
    limit: int = 50
    after: tuple[int, str] | None = None

    def to_json(self) -> dict[str, Any]:
        document = asdict(self)
        document["after"] = list(self.after) if self.after else None
        return document

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> JobFilter:
        """Raises ValueError for a field of the wrong type."""
        known = {f.name for f in fields(cls)}
        if unknown := sorted(set(document) - known):
            raise ValueError(f"unknown filter field(s): {', '.join(unknown)}")
        values = dict(document)
        for name in ("state", "sku", "campaign", "template", "model"):
            if values.get(name) is not None and not isinstance(values[name], str):
                raise ValueError(f"{name} must be a string")
        for name in ("since_ms", "until_ms", "limit"):
            if values.get(name) is not None and (
                not isinstance(values[name], int) or isinstance(values[name], bool)
            ):
                raise ValueError(f"{name} must be an integer")
        after = values.get("after")
        if after is not None:
            if not (isinstance(after, list | tuple) and len(after) == 2 and isinstance(after[0], int)):
                raise ValueError("after must be [created_ms, job_id]")
            values["after"] = (int(after[0]), str(after[1]))
        return cls(**values)


# Page sizes GET /v1/jobs allows.
MAX_JOB_PAGE = 500


def list_jobs(client: Client, database: str, filters: JobFilter) -> dict[str, Any]:
    """A page of jobs (the current state and what they were made with) and the key of the next
    page (None on the last). Jobs are what has a lifecycle event: an intake rejection of a whole
    catalog event is not one."""
    params: dict[str, Any] = {"limit": max(1, min(filters.limit, MAX_JOB_PAGE)) + 1}
    having = ["job_state != ''"]
    for name in ("sku", "campaign", "model"):
        value = getattr(filters, name)
        if value is not None:
            having.append(f"{name} = {{{name}:String}}")
            params[name] = value
    if filters.state is not None:
        having.append("job_state = {state:String}")
        params["state"] = filters.state
    if filters.template is not None:
        having.append(
            "(template = {template:String} OR startsWith(template, concat({template:String}, '@')))"
        )
        params["template"] = filters.template
    if filters.since_ms is not None:
        having.append("created_ms >= {since:Int64}")
        params["since"] = filters.since_ms
    if filters.until_ms is not None:
        having.append("created_ms < {until:Int64}")
        params["until"] = filters.until_ms
    if filters.after is not None:
        having.append("(created_ms, job_id) < ({after_ms:Int64}, {after_id:String})")
        params["after_ms"], params["after_id"] = filters.after
    rows = client.query(
        f"""SELECT job_id,
                   argMaxIf(state, {CURRENT_STATE_ORDER_SQL}, has({LIFECYCLE_SQL}, state)) AS job_state,
                   toUnixTimestamp64Milli(min(at)) AS created_ms,
                   toUnixTimestamp64Milli(max(at)) AS updated_ms,
                   anyIf(attributes['sku'], attributes['sku'] != '') AS sku,
                   anyIf(attributes['campaign'], attributes['campaign'] != '') AS campaign,
                   argMaxIf(attributes['template'], at, attributes['template'] != '') AS template,
                   argMaxIf(attributes['model'], at, attributes['model'] != '') AS model
            FROM {database}.{EVENTS_TABLE} FINAL
            GROUP BY job_id
            HAVING {" AND ".join(having)}
            ORDER BY created_ms DESC, job_id DESC
            LIMIT {{limit:UInt32}}""",
        parameters=params,
    ).named_results()
    jobs = [
        {
            "job_id": row["job_id"],
            "state": row["job_state"],
            "created_ms": int(row["created_ms"]),
            "updated_ms": int(row["updated_ms"]),
            "sku": row["sku"] or None,
            "campaign": row["campaign"] or None,
            "template": row["template"] or None,
            "model": row["model"] or None,
        }
        for row in rows
    ]
    page, more = jobs[: params["limit"] - 1], len(jobs) >= params["limit"]
    last = page[-1] if page else None
    return {"jobs": page, "next": [last["created_ms"], last["job_id"]] if more and last else None}
