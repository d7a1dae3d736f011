"""The event-log sink on the real embedded engine (chDB): an outage pauses ingestion and it resumes,
a row ClickHouse refuses is dead-lettered alone, and analyst SQL never holds up an insert."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from typing import Any

import aiohttp
import pytest

from deploy.local.session import free_port
from processors.config import Settings, load_settings
from processors.eventlog.clickhouse import EVENTS_TABLE, connect
from processors.eventlog.sink import EventLogSink, RefusedEvent
from processors.runtime import InputRecord
from processors.runtime.stage import StageContext
from schemas.topics import Topic

TABLE = f"lightbox.{EVENTS_TABLE}"


@pytest.fixture(scope="module")
def engine_path(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("chdb-sink"))


@pytest.fixture
def settings(engine_path) -> Settings:
    settings = load_settings()
    settings.clickhouse.embedded_path = engine_path
    settings.clickhouse.query_port = 0
    settings.clickhouse.analyst_max_execution_s = 3.0
    settings.stage.backoff_initial_s = 0.05
    settings.stage.backoff_max_s = 0.2
    return settings


@pytest.fixture
def admin(settings):
    # chDB hosts one engine per process, at one path: every client here is closed after the test.
    client = connect(settings)
    yield client
    client.close()


def _record(job: str, offset: int, **overrides: Any) -> InputRecord:
    value: dict[str, Any] = {
        "event_id": f"{job}-{offset}",
        "job_id": job,
        "stage": "intake",
        "state": "pending",
        "at": dt.datetime.now(dt.UTC),
        "duration_ms": 1.0,
        "reason": "",
        "detail": "",
        "attempt": 0,
        "attributes": {},
        "submitted_at": None,
        "worker": "test",
    }
    value.update(overrides)
    for key in [k for k, v in overrides.items() if v is _MISSING]:
        del value[key]
    return InputRecord(Topic.PIPELINE_EVENTS, 0, offset, job.encode(), value, b"", [], 0)


_MISSING = object()


def _count(admin, job: str) -> int:
    return int(
        admin.query(f"SELECT count() FROM {TABLE} FINAL WHERE job_id = %(j)s", {"j": job}).result_rows[0][0]
    )


async def _started(settings: Settings) -> EventLogSink:
    sink = EventLogSink(StageContext(settings, "eventlog"))
    await sink.start()
    return sink


async def _wait_until(predicate, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_a_refused_row_is_dead_lettered_and_the_rest_of_the_batch_lands(settings, admin) -> None:
    job = f"refused-{uuid.uuid4().hex[:6]}"
    records = [
        _record(job, 0),
        _record(job, 1, attempt=70_000),  # Avro int, ClickHouse UInt16: refused
        _record(job, 2),
        _record(job, 3, worker=_MISSING),  # not an event-log row at all
        _record(job, 4),
    ]
    sink = await _started(settings)
    try:
        outcomes = await sink.handle_batch(records)
    finally:
        await sink.stop()
    dead = [i for i, outcome in enumerate(outcomes) if outcome.dead_letter is not None]
    assert dead == [1, 3]
    assert isinstance(outcomes[1].dead_letter, RefusedEvent)
    assert "ClickHouse refused the row" in str(outcomes[1].dead_letter)
    assert "worker" in str(outcomes[3].dead_letter)
    assert _count(admin, job) == 3


async def test_an_embedded_outage_pauses_ingestion_and_it_resumes(settings, admin) -> None:
    job = f"outage-{uuid.uuid4().hex[:6]}"
    sink = await _started(settings)
    try:
        # A real refusal by the engine's state: too many parts (merges stopped, threshold 1).
        await sink.handle_batch([_record(job, 0)])
        await sink.handle_batch([_record(job, 1)])
        admin.command(f"SYSTEM STOP MERGES {TABLE}")
        admin.command(f"ALTER TABLE {TABLE} MODIFY SETTING parts_to_throw_insert = 1")
        try:
            batch = asyncio.create_task(sink.handle_batch([_record(job, 2), _record(job, 3)]))
            await _wait_until(lambda: sink.ingestor.paused_since is not None)
            await asyncio.sleep(0.6)  # several backoff rounds
            assert not batch.done(), "an outage must hold the batch (no commit), not fail it"
        finally:
            admin.command(f"ALTER TABLE {TABLE} MODIFY SETTING parts_to_throw_insert = 3000")
            admin.command(f"SYSTEM START MERGES {TABLE}")
        outcomes = await asyncio.wait_for(batch, 20)
    finally:
        await sink.stop()
    assert [o.dead_letter for o in outcomes] == [None, None], "nothing is dead-lettered for an outage"
    assert sink.ingestor.paused_since is None
    assert _count(admin, job) == 4


async def test_an_unreachable_server_pauses_ingestion_and_it_resumes(settings, admin) -> None:
    job = f"server-{uuid.uuid4().hex[:6]}"
    # Nothing listens on this port: a server that is down. Starting is not an error.
    settings.clickhouse.url = f"http://127.0.0.1:{free_port()}"
    sink = await _started(settings)
    try:
        batch = asyncio.create_task(sink.handle_batch([_record(job, 0), _record(job, 1)]))
        await _wait_until(lambda: sink.ingestor.paused_since is not None)
        await asyncio.sleep(0.6)
        assert not batch.done(), "an unreachable server must hold the batch, not fail it"
        # ClickHouse answers again at the configured address (here: the embedded engine): the
        # lane reconnects on its next try, creates the table if missing, and the batch lands.
        settings.clickhouse.url = ""
        outcomes = await asyncio.wait_for(batch, 20)
    finally:
        await sink.stop()
    assert [o.dead_letter for o in outcomes] == [None, None]
    assert _count(admin, job) == 2


async def test_a_malformed_clickhouse_url_fails_at_start(settings) -> None:
    settings.clickhouse.url = "ftp://clickhouse.example"
    with pytest.raises(ValueError, match="must be an http"):
        await _started(settings)


async def test_analyst_sql_never_holds_up_inserts(settings, admin) -> None:
    job = f"isolated-{uuid.uuid4().hex[:6]}"
    settings.clickhouse.query_port = free_port()
    # Long enough for ten one-event inserts on a loaded machine (each also folds its event into
    # the job facts): what is asserted is that they land while the query runs.
    limit_s = 8.0
    settings.clickhouse.analyst_max_execution_s = limit_s
    base = f"http://127.0.0.1:{settings.clickhouse.query_port}"
    sink = await _started(settings)
    try:
        async with aiohttp.ClientSession() as http:
            started = time.monotonic()
            long_query = asyncio.create_task(
                http.post(f"{base}/query", json={"sql": "SELECT count() FROM system.numbers"})
            )
            await asyncio.sleep(0.3)
            for offset in range(10):
                await sink.handle_batch([_record(job, offset)])
            landed_after = time.monotonic() - started
            # The service queries have their own lane too: a job's timeline answers meanwhile.
            async with http.get(f"{base}/jobs/{job}") as response:
                assert len((await response.json())["events"]) == 10
            assert not long_query.done(), "the inserts finished while the long query still ran"
            async with await long_query as response:
                body = await response.json()
            assert response.status == 422
            assert body["limit"] == "max_execution_time"
            assert body["error"].startswith(f"timeout: the query ran past {limit_s:g}s")
            async with http.post(
                f"{base}/query", json={"sql": f"SELECT count() FROM {TABLE} FINAL WHERE job_id = '{job}'"}
            ) as response:
                assert (await response.json())["rows"] == [[10]]
    finally:
        await sink.stop()
    assert landed_after < limit_s


async def test_the_file_function_is_refused_over_http(settings) -> None:
    settings.clickhouse.query_port = free_port()
    sink = await _started(settings)
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"http://127.0.0.1:{settings.clickhouse.query_port}/query",
                json={"sql": "SELECT file('/etc/hostname')"},
            ) as response,
        ):
            assert response.status == 400
            assert (await response.json())["error"].startswith("file may not be called here")
    finally:
        await sink.stop()


async def test_analyst_queries_past_the_concurrency_are_refused_not_queued(settings) -> None:
    settings.clickhouse.query_port = free_port()
    settings.clickhouse.analyst_concurrency = 1
    base = f"http://127.0.0.1:{settings.clickhouse.query_port}"
    sink = await _started(settings)
    try:
        async with aiohttp.ClientSession() as http:
            long_query = asyncio.create_task(
                http.post(f"{base}/query", json={"sql": "SELECT count() FROM system.numbers"})
            )
            await _wait_until(lambda: sink.lanes.running == 1)
            async with http.post(f"{base}/query", json={"sql": "SELECT 1"}) as response:
                assert response.status == 429
                assert "analyst_concurrency" in (await response.json())["error"]
            (await long_query).release()
    finally:
        await sink.stop()
