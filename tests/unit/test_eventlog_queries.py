"""The event-log queries on a real embedded ClickHouse (chDB), as the sink runs them."""

from __future__ import annotations

import datetime as dt

import pytest

from processors.config import load_settings
from processors.eventlog import queries
from processors.eventlog.clickhouse import EVENT_COLUMNS, EVENTS_TABLE, connect

T0 = dt.datetime(2026, 11, 21, 12, 0, tzinfo=dt.UTC)


def _event(job: str, stage: str, state: str, ms: int, reason: str = "", duration: float = 10.0) -> list:
    at = T0 + dt.timedelta(milliseconds=ms)
    values = {
        "event_id": f"{job}-{stage}-{state}-{ms}",
        "job_id": job,
        "stage": stage,
        "state": state,
        "at": at,
        "duration_ms": duration,
        "reason": reason,
        "detail": "",
        "attempt": 0,
        "attributes": {"k": "v"},
        "submitted_at": T0,
        "worker": "test",
    }
    return [values[c] for c in EVENT_COLUMNS]


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    settings = load_settings()
    settings.clickhouse.embedded_path = str(tmp_path_factory.mktemp("chdb"))
    return settings


@pytest.fixture(scope="module")
def client(settings):
    # chDB allows one engine per process, at one path: every client of this module is closed at
    # its end, so the next module's engine (another path) can open.
    client = connect(settings)
    rows = [
        _event("a", "intake", "pending", 0),
        _event("a", "quality", "completed", 400),
        _event("a", "publish", "approved", 1000),
        _event("a", "publish", "published", 1000),  # same millisecond: rank decides
        _event("b", "intake", "pending", 0),
        _event("b", "quality", "retry", 300, reason="blank_output"),
        _event("b", "quality", "completed", 900),
        _event("b", "publish", "published", 3000),
        _event("c", "intake", "pending", 0),
        _event("c", "references", "failed", 50, reason="missing_source_file"),
        _event("c", "references", "failed", 50, reason="missing_source_file"),  # replayed duplicate
    ]
    rows.append(rows[-1])
    client.insert(f"lightbox.{EVENTS_TABLE}", rows, column_names=EVENT_COLUMNS)
    yield client
    client.close()


def test_timeline_orders_events_and_picks_the_current_state(client) -> None:
    timeline = queries.job_timeline(client, "lightbox", "a")
    assert [e["state"] for e in timeline["events"]] == ["pending", "completed", "approved", "published"]
    assert timeline["state"] == "published"
    assert queries.job_timeline(client, "lightbox", "zzz")["state"] == "unknown"


def test_summary_counts_states_latency_artifacts_and_reasons(client) -> None:
    summary = queries.summary(client, "lightbox")
    assert summary["jobs_by_state"] == {"failed": 1, "published": 2}
    assert summary["published"] == 2
    assert summary["latency_ms"]["max"] == 3000
    assert 1000 <= summary["latency_ms"]["p50"] <= 3000
    # b's first verdict was rejected (retry), then two verdicts passed: 1 of 3.
    assert summary["artifact_rate"] == pytest.approx(1 / 3)
    reasons = {(r["stage"], r["reason"]): r["count"] for r in summary["reasons"]}
    assert reasons[("references", "missing_source_file")] == 1  # de-duplicated by event id
    assert reasons[("quality", "blank_output")] == 1


def test_latencies_per_job(client) -> None:
    latencies = queries.job_latencies(client, "lightbox", ["a", "b"])
    assert latencies["a"]["end_to_end_ms"] == 1000
    assert latencies["b"]["end_to_end_ms"] == 3000
    assert latencies["a"]["handler_ms"] == pytest.approx(40.0)


@pytest.fixture
async def query_client(client, settings):
    from aiohttp.test_utils import TestClient, TestServer

    from processors.eventlog.analyst import AnalystLimits
    from processors.eventlog.clickhouse import connect_analyst
    from processors.eventlog.engine import ClickHouseLane
    from processors.eventlog.server import QueryLanes, build_query_app

    lanes = QueryLanes(
        queries=ClickHouseLane("queries", lambda: connect(settings)),
        analyst=ClickHouseLane("analyst", lambda: connect_analyst(settings)),
        limits=AnalystLimits.of(settings.clickhouse),
    )
    app = build_query_app(lanes, "lightbox")
    async with TestClient(TestServer(app, host="127.0.0.1")) as test_client:
        yield test_client
    lanes.queries.close()
    lanes.analyst.close()


async def test_query_endpoint_answers_json_posts_from_loopback(query_client) -> None:
    response = await query_client.post("/query", json={"sql": "SELECT count() FROM lightbox.pipeline_events"})
    assert response.status == 200, await response.text()
    (count,) = (await response.json())["rows"][0]
    assert count > 0
    for host in ("localhost", "127.0.0.1:18123", "[::1]:18123", "LOCALHOST:1"):
        response = await query_client.get("/healthz", headers={"Host": host})
        assert response.status == 200, host


async def test_query_endpoint_refuses_outfile_over_http(query_client) -> None:
    response = await query_client.post("/query", json={"sql": "SELECT 1 INTO/**/OUTFILE '/tmp/lb-x'"})
    assert response.status == 400
    assert "OUTFILE" in await response.text()


async def test_query_endpoint_refuses_cross_site_simple_posts(query_client) -> None:
    # What a no-cors fetch() or a form from another site can send: not application/json.
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        response = await query_client.post(
            "/query", data=b'{"sql": "SELECT 1"}', headers={"Content-Type": content_type}
        )
        assert response.status == 415, content_type
    response = await query_client.post("/latencies", data=b'{"job_ids": ["a"]}')
    assert response.status == 415


async def test_query_endpoint_refuses_foreign_host_headers(query_client) -> None:
    # DNS rebinding: the page's own name arrives as Host even though the socket is loopback.
    for host in ("attacker.example", "attacker.example:18123", "127.0.0.1.nip.io", "", "bad:port:x"):
        response = await query_client.post("/query", json={"sql": "SELECT 1"}, headers={"Host": host})
        assert response.status == 403, host
        response = await query_client.get("/summary", headers={"Host": host})
        assert response.status == 403, host


def test_job_states_are_each_jobs_current_state(client) -> None:
    assert queries.job_states(client, "lightbox", ["a", "b", "c", "nobody"]) == {
        "a": "published",
        "b": "published",
        "c": "failed",
    }


async def test_states_are_a_service_query_on_their_own_lane(query_client) -> None:
    response = await query_client.post("/states", json={"job_ids": ["a", "c"]})
    assert response.status == 200
    assert await response.json() == {"a": "published", "c": "failed"}
