"""Gathering what the checker judges, from where it really is: the topics (read directly), the
event log (ClickHouse, through the sink's query endpoint like `lightbox status`) and the object
store."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from gateway.harness.chaos.checker import Evidence, Letter
from gateway.harness.chaos.supervision import SupervisionReport
from gateway.harness.chaos.topics import JobEvent, read_topic
from processors.config import Settings
from processors.eventlog.queries import CURRENT_STATE_SQL, LIFECYCLE_SQL
from processors.eventlog.reader import EventLogReader, EventLogUnavailable
from processors.runtime.codec import Codec
from processors.runtime.dlq import parse_headers
from processors.storage import ObjectStore
from schemas.topics import Topic

EVENT_LOG_CHUNK = 50  # job ids per event-log query: results stay small
EVENT_LOG_RETRY_S = 60.0


def dead_letters(settings: Settings) -> list[Letter]:
    letters = []
    for message in read_topic(settings, Topic.PIPELINE_DLQ):
        headers = parse_headers(message.headers())
        letters.append(
            Letter(
                key=headers.get("original.key", ""),
                stage=headers.get("stage", ""),
                error_class=headers.get("error.class", ""),
                error_message=headers.get("error.message", ""),
                fault=headers.get("fault", ""),
                error_kind=headers.get("error.kind", ""),
                source="/".join(
                    headers.get(f"original.{part}", "?") for part in ("topic", "partition", "offset")
                ),
            )
        )
    return letters


def published(settings: Settings) -> tuple[Counter[str], dict[str, set[str]]]:
    """Records on assets.published by job, and the files they name."""
    codec = Codec.of(settings)
    counts: Counter[str] = Counter()
    keys: dict[str, set[str]] = {}
    for message in read_topic(settings, Topic.ASSETS_PUBLISHED):
        job = codec.decode(message).value
        counts[job["job_id"]] += 1
        keys.setdefault(job["job_id"], set()).update(job.get("published_keys") or [])
    return counts, keys


def asset_files(settings: Settings, sku_of: dict[str, str]) -> dict[str, set[str]]:
    """Every file under each SKU's published folder, by the job folder it is in (a folder of a
    job nobody submitted shows up under its own name)."""
    store = ObjectStore(settings.storage)
    prefix = settings.review.publish_prefix.rstrip("/")
    files: dict[str, set[str]] = {}
    for sku in sorted(set(sku_of.values())):
        for key in store.list_keys(f"{prefix}/{sku}/"):
            job = key[len(f"{prefix}/{sku}/") :].split("/", 1)[0]
            files.setdefault(job, set()).add(key)
    return files


def event_log(settings: Settings, job_ids: list[str]) -> tuple[dict[str, str], set[str]]:
    """The event log's current state per job and the event ids it holds for them. Retried for a
    while: the sink may still be restarting after the run's last kill."""
    deadline = time.monotonic() + EVENT_LOG_RETRY_S
    while True:
        try:
            return asyncio.run(_event_log(settings, job_ids))
        except EventLogUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)


async def _event_log(settings: Settings, job_ids: list[str]) -> tuple[dict[str, str], set[str]]:
    table = f"{settings.clickhouse.database}.pipeline_events"
    states: dict[str, str] = {}
    ids: set[str] = set()
    async with EventLogReader(settings) as reader:
        for start in range(0, len(job_ids), EVENT_LOG_CHUNK):
            chunk = job_ids[start : start + EVENT_LOG_CHUNK]
            quoted = ",".join(f"'{j}'" for j in chunk if all(c.isalnum() or c in "-_" for c in j))
            result = await reader.sql(
                f"SELECT job_id, {CURRENT_STATE_SQL} FROM {table} FINAL "
                f"WHERE job_id IN ({quoted}) AND has({LIFECYCLE_SQL}, state) GROUP BY job_id"
            )
            states.update({row[0]: row[1] for row in result["rows"]})
            result = await reader.sql(f"SELECT DISTINCT event_id FROM {table} WHERE job_id IN ({quoted})")
            ids.update(row[0] for row in result["rows"])
    return states, ids


def collect(
    settings: Settings,
    job_ids: list[str],
    sku_of: dict[str, str],
    events: dict[str, list[JobEvent]],
    supervision: SupervisionReport,
) -> Evidence:
    states, ids = event_log(settings, job_ids)
    counts, keys = published(settings)
    return Evidence(
        job_ids=job_ids,
        events={job: events.get(job, []) for job in job_ids},
        event_log_states=states,
        event_log_ids=ids,
        published_records=counts,
        published_keys=keys,
        asset_files=asset_files(settings, sku_of),
        letters=dead_letters(settings),
        supervision=supervision,
    )
