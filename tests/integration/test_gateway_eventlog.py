"""Event-log reads as the gateway makes them against a ClickHouse server (clickhouse.url; here
the real engine in-process through a chdb:// URL): queries never block the event loop, each
reader thread connects once, and the job list's filters and cursor pages are exact."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client

import processors.eventlog.reader as reader_module
from processors.config import Settings, load_settings
from processors.eventlog import queries
from processors.eventlog.clickhouse import EVENT_COLUMNS, EVENTS_TABLE, connect
from processors.eventlog.queries import JobFilter
from processors.eventlog.reader import EventLogReader

pytestmark = pytest.mark.integration

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
T0_MS = int(T0.timestamp() * 1000)


def _row(job: str, stage: str, state: str, ms: int, **attributes: str) -> list[Any]:
    values = {
        "event_id": f"{job}-{stage}-{state}-{ms}",
        "job_id": job,
        "stage": stage,
        "state": state,
        "at": T0 + dt.timedelta(milliseconds=ms),
        "duration_ms": 1.0,
        "reason": "",
        "detail": "",
        "attempt": 0,
        "attributes": attributes,
        "submitted_at": T0,
        "worker": "test",
    }
    return [values[c] for c in EVENT_COLUMNS]


def _job(job: str, at: int, sku: str, template: str, model: str, final: str, campaign: str = "") -> list:
    intake = {"sku": sku, **({"campaign": campaign} if campaign else {})}
    return [
        _row(job, "intake", "pending", at, **intake),
        _row(job, "prompt", "running", at + 10, template=template, model=model),
        _row(job, "generate", "running", at + 20, model=model),
        _row(job, "publish", final, at + 30),
    ]


JOBS = [
    # job, created (ms after T0), sku, template, model, final state, campaign
    ("j1", 0, "SKU-A", "studio-hero@v3", "sdxl", "published", "spring"),
    ("j2", 1000, "SKU-A", "studio-hero@v4", "flux", "in_review", ""),
    ("j3", 2000, "SKU-B", "lifestyle-kitchen@v1", "sdxl", "published", "spring"),
    ("j4", 3000, "SKU-C", "studio-hero-wide@v1", "sdxl", "failed", ""),
    ("j5", 3000, "SKU-C", "studio-hero@v4", "sdxl", "published", ""),  # same ms as j4
]


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    path: Path = tmp_path_factory.mktemp("chdb-gateway")
    base = load_settings()
    settings = base.model_copy(
        update={
            "clickhouse": base.clickhouse.model_copy(update={"url": f"chdb://{path}"}),
            "gateway": base.gateway.model_copy(update={"eventlog_threads": 3}),
        }
    )
    client: Client = connect(settings)
    rows = [row for spec in JOBS for row in _job(spec[0], *spec[1:])]
    # An intake rejection of a whole catalog event: no lifecycle state, not a job.
    rows.append(_row("event-rejected", "intake", "rejected_event", 500, sku="SKU-A"))
    client.insert(f"{settings.clickhouse.database}.{EVENTS_TABLE}", rows, column_names=EVENT_COLUMNS)
    yield settings
    # chDB allows one engine per process, at one path: close every client before the next module.
    client.close()


@pytest.fixture
async def reader(settings: Settings) -> AsyncIterator[EventLogReader]:
    async with EventLogReader(settings) as reader:
        yield reader


async def _ids(reader: EventLogReader, **filters: Any) -> list[str]:
    page = await reader.list_jobs(JobFilter(**filters))
    return [job["job_id"] for job in page["jobs"]]


async def test_filters_select_exactly_the_matching_jobs(reader: EventLogReader) -> None:
    assert await _ids(reader) == ["j5", "j4", "j3", "j2", "j1"], "newest first; ties by job id"
    assert await _ids(reader, sku="SKU-A") == ["j2", "j1"]
    assert await _ids(reader, state="published") == ["j5", "j3", "j1"]
    assert await _ids(reader, model="flux") == ["j2"]
    # A template id matches every version of it, and only it (not studio-hero-wide).
    assert await _ids(reader, template="studio-hero") == ["j5", "j2", "j1"]
    assert await _ids(reader, template="studio-hero@v4") == ["j5", "j2"]
    assert await _ids(reader, campaign="spring") == ["j3", "j1"]
    assert await _ids(reader, since_ms=T0_MS + 1000, until_ms=T0_MS + 3000) == ["j3", "j2"]
    assert await _ids(reader, sku="SKU-C", state="failed") == ["j4"]
    assert await _ids(reader, sku="no-such-sku") == []
    (row,) = (await reader.list_jobs(JobFilter(sku="SKU-B")))["jobs"]
    assert row == {
        "job_id": "j3",
        "state": "published",
        "created_ms": T0_MS + 2000,
        "updated_ms": T0_MS + 2030,
        "sku": "SKU-B",
        "campaign": "spring",
        "template": "lifestyle-kitchen@v1",
        "model": "sdxl",
    }


async def test_cursor_pages_cover_every_job_once(reader: EventLogReader) -> None:
    seen, after = [], None
    for _ in range(10):
        page = await reader.list_jobs(JobFilter(limit=2, after=after))
        seen += [job["job_id"] for job in page["jobs"]]
        if page["next"] is None:
            break
        after = tuple(page["next"])
    assert seen == ["j5", "j4", "j3", "j2", "j1"]


SLOW_QUERY_S = 1.5
MAX_LOOP_GAP_S = 0.7


async def test_queries_run_off_the_event_loop(
    reader: EventLogReader, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slow query holds only its own thread: the loop keeps ticking meanwhile. Before the
    reader used its lane, a server query ran on the loop and froze every other request. Each
    query takes 1.5 s, so one run on the loop stalls it for that long; a gap under half of that
    is the machine's scheduling (a CI run once saw 0.49 s on 2 busy cores), not the query."""
    real_timeline = queries.job_timeline

    def slow_timeline(client: Client, database: str, job_id: str) -> dict[str, Any]:
        time.sleep(SLOW_QUERY_S)
        return real_timeline(client, database, job_id)

    monkeypatch.setattr(queries, "job_timeline", slow_timeline)
    gaps: list[float] = []

    async def tick() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.02)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    try:
        timelines = await asyncio.gather(*(reader.timeline(j) for j in ("j1", "j2", "j3")))
    finally:
        ticker.cancel()
    assert [t["state"] for t in timelines] == ["published", "in_review", "published"]
    assert max(gaps) < MAX_LOOP_GAP_S, f"the loop stalled for {max(gaps):.2f}s"
    # Analyst SQL too, on its own read-only connection (sum() makes the engine evaluate the
    # sleep on every row; count() alone would not).
    gaps.clear()
    ticker = asyncio.create_task(tick())
    started = time.monotonic()
    try:
        result = await reader.sql("SELECT sum(sleepEachRow(0.5)) FROM numbers(3)")
    finally:
        ticker.cancel()
    assert result["rows"] == [[0]]
    assert time.monotonic() - started >= SLOW_QUERY_S - 0.1, "the query really took its time"
    assert max(gaps) < MAX_LOOP_GAP_S, f"the loop stalled for {max(gaps):.2f}s"


async def test_each_reader_thread_connects_once(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[int] = []
    real_connect = reader_module.connect

    def counted(settings: Settings) -> Client:
        made.append(1)
        return real_connect(settings)

    monkeypatch.setattr(reader_module, "connect", counted)
    async with EventLogReader(settings) as reader:
        for _ in range(3):
            await asyncio.gather(*(reader.timeline(f"j{i % 5 + 1}") for i in range(20)))
        assert await reader.healthy()
    assert 1 <= len(made) <= settings.gateway.eventlog_threads
