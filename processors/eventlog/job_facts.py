"""Per-job facts, kept as events arrive: the table and view the job-level figures read.

Grouping ten million events into a million jobs at query time (FINAL, then GROUP BY) costs
seconds of engine CPU however the query is written. So a materialized view folds each inserted
block into `job_facts`, an AggregatingMergeTree with one row per job once merged, and
`job_latest` reads that (a million small rows) instead of the events.

Every fact is an aggregate that a second copy of an event cannot change: max, min, a max keyed by
the event's id (maxMap, by a 64-bit hash of the id: a job's few
ids never collide in practice) or a set of ids. That is what makes the facts de-duplicated at the sink:
a batch the sink inserts twice after a crash, a backfill that overlaps live inserts, a replayed
range, all leave the facts as they were. (A copy of an event with another time, which only
at-least-once mode produces when a stage redoes a batch, moves `last_at` to the copy's time;
the events table still keeps the earliest: docs/analytics.md.)

The rules that say which events are verdicts, generations and so on live once, as ALIAS columns
of the events table (EVENT_FLAGS), and the named SQL, the materialized view and analysts all use
those columns.
"""

from __future__ import annotations

from clickhouse_connect.driver.client import Client

from processors.eventlog.derived import ensure_fed_table
from processors.job_states import LIFECYCLE, JobState

EVENTS_TABLE = "pipeline_events"
FACTS_TABLE = "job_facts"
FACTS_VIEW = "job_facts_mv"
JOB_VIEW = "job_latest"
GROUPS_VIEW = "job_groups"
# The version of a ReplacingMergeTree row of an event: higher for an earlier `at`, so the earliest
# copy of an event wins (a batch redone after a crash re-sends its events later).
EARLIEST_COPY_WINS = "toUInt64(9223372036854775807) - toUInt64(toUnixTimestamp64Milli(at))"
# What a job can be grouped by (`lightbox metrics --by`, the named SQL's {by}): job_latest's
# column of each name; '' is every job in one group.
JOB_GROUPINGS = ("model", "backend", "template", "campaign")
# Stored as the facts table's comment: a table of another generation is rebuilt from the events.
FACTS_GENERATION = "lightbox job facts 1"

# Each rule an event-level and a job-level figure share: computed when read (ALIAS), so they
# cost no storage, apply to events already stored, and change with one ALTER.
EVENT_FLAGS: dict[str, str] = {
    # A quality verdict: the gate scored an attempt and passed it, sent it back for another, or
    # failed the job for its quality.
    "is_verdict": "stage = 'quality' AND (state IN ('completed', 'retry') "
    "OR (state = 'failed' AND reason = 'quality_rejection'))",
    # A verdict that rejected what it scored (a rejected verdict sent on to review is flagged).
    "is_rejected_verdict": "is_verdict AND (state = 'retry' OR reason = 'quality_rejection' "
    "OR attributes['needs_review'] = 'true')",
    # One generation: generate's `running` event, which carries the compute it used.
    "is_generation": "stage = 'generate' AND state = 'running'",
    # Candidates a verdict or a generation was about (one unless the event says otherwise).
    "variants": "if(is_verdict OR is_generation, "
    "toUInt32OrDefault(attributes['variants'], toUInt32(1)), toUInt32(0))",
    # Of a verdict's candidates, how many failed: all of a rejected verdict's (the best one is
    # chosen), the count it names for a passed one (none before that attribute existed).
    "rejected_variants": "if(is_rejected_verdict, variants, "
    "if(is_verdict, toUInt32OrZero(attributes['rejected_variants']), toUInt32(0)))",
}


def event_flag_statements(database: str, table: str = EVENTS_TABLE) -> list[str]:
    """Add the flag columns to an events table of any age, and bring their rules up to date."""
    return [
        f"ALTER TABLE {database}.{table} "
        + ", ".join(
            f"ADD COLUMN IF NOT EXISTS {name} {_flag_type(name)} ALIAS {rule}"
            for name, rule in EVENT_FLAGS.items()
        ),
        f"ALTER TABLE {database}.{table} "
        + ", ".join(
            f"MODIFY COLUMN {name} {_flag_type(name)} ALIAS {rule}" for name, rule in EVENT_FLAGS.items()
        ),
    ]


def _flag_type(name: str) -> str:
    return "UInt32" if name.endswith("variants") else "Bool"


_TIME = "DateTime64(3, 'UTC')"
_LATEST = f"max, Tuple({_TIME}, String)"


def _latest(condition: str, attribute: str) -> str:
    value = f"attributes['{attribute}']"
    return f"maxIf(tuple(at, {value}), ({condition}) AND {value} != '')"


# column -> (type, the aggregate over one block of events). Each aggregate is idempotent (see the
# module's docstring); the view below re-aggregates with the same function.
_FACTS: dict[str, tuple[str, str]] = {
    "published": ("max, UInt8", f"max(state = '{JobState.PUBLISHED}')"),
    # (time x 16 + lifecycle rank, state) of the latest lifecycle event: later wins, and within
    # one millisecond the later lifecycle state (processors/job_states.py current_state).
    "lifecycle_last": (
        "max, Tuple(Int64, String)",
        "maxIf(tuple(toInt64(toUnixTimestamp64Milli(at)) * 16 + rank, toString(state)), rank > 0)",
    ),
    "first_at": (f"min, {_TIME}", "min(at)"),
    "last_at": (f"max, {_TIME}", "max(at)"),
    "first_submitted_at": (f"min, Nullable({_TIME})", "min(submitted_at)"),
    "published_submitted_at": (
        f"min, Nullable({_TIME})",
        f"min(if(state = '{JobState.PUBLISHED}', submitted_at, NULL))",
    ),
    "published_at": (f"max, Nullable({_TIME})", f"max(if(state = '{JobState.PUBLISHED}', at, NULL))"),
    "sku": ("max, String", "max(if(stage = 'intake', attributes['sku'], ''))"),
    "campaign": ("max, String", "max(if(stage = 'intake', attributes['campaign'], ''))"),
    # (time, value): the latest non-empty one wins.
    "latest_template": (_LATEST, _latest("stage = 'prompt'", "template")),
    "latest_model": (_LATEST, _latest("stage IN ('prompt', 'generate')", "model")),
    "latest_backend": (_LATEST, _latest("stage IN ('prompt', 'generate')", "backend")),
    "latest_failure": (
        _LATEST,
        f"maxIf(tuple(at, toString(reason)), state = '{JobState.FAILED}')",
    ),
    "attempts": ("max, UInt16", "max(attempt)"),
    # event id -> 1 + rejected, for every verdict
    "verdicts_by_id": (
        "maxMap, Tuple(Array(UInt64), Array(UInt8))",
        "maxMapIf(id_key, [toUInt8(1 + is_rejected_verdict)], is_verdict)",
    ),
    # event id -> (candidates, failed candidates), for the first attempt's verdicts
    "first_verdicts_by_id": (
        "maxMap, Tuple(Array(UInt64), Array(UInt32), Array(UInt32))",
        "maxMapIf(id_key, [variants], [rejected_variants], is_verdict AND attempt = 0)",
    ),
    "first_passed": (
        "max, UInt8",
        "max(is_verdict AND attempt = 0 AND state = 'completed' AND NOT is_rejected_verdict)",
    ),
    "quality_retried": ("max, UInt8", f"max(stage = 'quality' AND state = '{JobState.RETRY}')"),
    "retried": ("max, UInt8", f"max(state = '{JobState.RETRY}')"),
    "needed_person": ("max, UInt8", f"max(state = '{JobState.IN_REVIEW}')"),
    # event id -> (images, GPU ms, CPU ms, API calls, fell back), for every generation
    "generations_by_id": (
        "maxMap, Tuple(Array(UInt64), Array(UInt32), Array(Float64), Array(Float64), Array(UInt32), "
        "Array(UInt8))",
        "maxMapIf(id_key, [variants], [toFloat64OrZero(attributes['gpu_ms'])], "
        "[toFloat64OrZero(attributes['cpu_ms'])], [toUInt32OrZero(attributes['api_calls'])], "
        "[toUInt8(attributes['fell_back_from'] != '')], is_generation)",
    ),
    "dead_letter_ids": (
        "groupUniqArrayArray, Array(UInt64)",
        f"groupUniqArrayArrayIf(id_key, state = '{JobState.DEAD_LETTERED}')",
    ),
}


def facts_select(database: str) -> str:
    """One row of facts per job of the events read: the materialized view's query (over each
    inserted block) and the backfill's (over the whole table)."""
    lifecycle = "[" + ",".join(f"'{s}'" for s in LIFECYCLE) + "]"
    ranks = "[" + ",".join(str(i + 1) for i in range(len(LIFECYCLE))) + "]"
    columns = ",\n    ".join(f"{agg} AS {name}" for name, (_, agg) in _FACTS.items())
    return f"""SELECT job_id,
    {columns}
FROM (SELECT *, is_verdict, is_rejected_verdict, is_generation, variants, rejected_variants,
             transform(toString(state), {lifecycle}, {ranks}, 0) AS rank,
             -- an event's key in the per-id maps: a 64-bit hash of its id (a job's few ids
             -- never collide)
             [cityHash64(event_id)] AS id_key
      FROM {database}.{EVENTS_TABLE})
GROUP BY job_id"""


def _facts_table_ddl(database: str, ttl_days: int) -> str:
    columns = ",\n    ".join(f"{name} SimpleAggregateFunction({kind})" for name, (kind, _) in _FACTS.items())
    return f"""CREATE TABLE {database}.{FACTS_TABLE} (
    job_id String,
    {columns}
) ENGINE = AggregatingMergeTree
ORDER BY job_id{ttl_clause("last_at", ttl_days)}
COMMENT '{FACTS_GENERATION}'"""


def ttl_expression(column: str, ttl_days: int) -> str:
    return f"toDateTime({column}) + INTERVAL {int(ttl_days)} DAY"


def ttl_clause(column: str, ttl_days: int) -> str:
    """ttl_days 0: kept for ever."""
    return f"\nTTL {ttl_expression(column, ttl_days)}" if ttl_days > 0 else ""


def ensure_job_facts(client: Client, database: str, ttl_days: int) -> bool:
    """The facts table, its materialized view and the job_latest view over it. A facts table
    that is missing or of another generation is (re)built from the events already stored: safe
    beside live inserts, since every fact is idempotent. True if it was (re)built."""
    rebuilt = ensure_fed_table(
        client,
        database,
        table=FACTS_TABLE,
        view=FACTS_VIEW,
        mark=FACTS_GENERATION,
        create_table=_facts_table_ddl(database, ttl_days),
        select=facts_select(database),
    )
    client.command(job_view_ddl(database))
    client.command(groups_view_ddl(database))
    return rebuilt


def job_view_ddl(database: str) -> str:
    """One row per job: the columns the job-level figures count (docs/analytics.md). A plain
    view over the facts, so it is exact the moment an event lands. It reads with FINAL, which
    merges only the rows of one job that sit in different parts (fast), where GROUP BY would
    re-aggregate every row's maps (25 times slower on a million jobs)."""
    return f"""CREATE OR REPLACE VIEW {database}.{JOB_VIEW} AS
    SELECT job_id,
        -- published if it ever was, else the latest lifecycle state; '' for markers only
        if(published, '{JobState.PUBLISHED}', lifecycle_last.2) AS job_state,
        first_at,
        last_at,
        first_submitted_at,
        published,
        if(published, dateDiff('millisecond', published_submitted_at, published_at), NULL)
            AS end_to_end_ms,
        sku,
        campaign,
        latest_template.2 AS template,
        latest_model.2 AS model,
        latest_backend.2 AS backend,
        latest_failure.2 AS failure_reason,
        attempts,
        length(verdicts_by_id.1) AS verdicts,
        countEqual(verdicts_by_id.2, 2) AS rejected_verdicts,
        notEmpty(first_verdicts_by_id.1) AS first_scored,
        first_passed,
        arraySum(first_verdicts_by_id.2) AS first_candidates,
        arraySum(first_verdicts_by_id.3) AS first_rejected_candidates,
        quality_retried,
        retried,
        needed_person,
        length(generations_by_id.1) AS generations,
        arrayExists(x -> x = 1, generations_by_id.6) AS fell_back,
        arraySum(generations_by_id.2) AS images_generated,
        arraySum(generations_by_id.3) / 1000 AS gpu_seconds,
        arraySum(generations_by_id.4) / 1000 AS cpu_seconds,
        arraySum(generations_by_id.5) AS api_calls,
        length(dead_letter_ids) AS dead_letters
    FROM {database}.{FACTS_TABLE} FINAL"""


def groups_view_ddl(database: str) -> str:
    """job_latest once per grouping, with `grouping` and the job's `group_key` under it: the one
    home of "a job's group". A query reads it `WHERE grouping = {by:String}`, a constant the
    engine folds, so it reads only that branch's column of job_latest. (A multiIf over the four
    columns read all four, and was a quarter of job_figures' engine CPU over a million jobs.)"""
    branches = [
        f"SELECT '{name}' AS grouping, {name} AS group_key, * FROM {database}.{JOB_VIEW}"
        for name in JOB_GROUPINGS
    ]
    branches.append(f"SELECT '' AS grouping, '' AS group_key, * FROM {database}.{JOB_VIEW}")
    return f"CREATE OR REPLACE VIEW {database}.{GROUPS_VIEW} AS\n" + "\nUNION ALL ".join(branches)
