"""The named event-log queries (processors/eventlog/sql/) the dashboard and the summary read: each
file is one read-only statement an analyst's connection accepts, its parameters are bound only
as checked literals, and its answers on a real embedded ClickHouse (chDB) are the right numbers."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client

from gateway.web.dashboard import CHARTS, charts_of, time_axis
from processors.config import Settings, load_settings
from processors.eventlog import named
from processors.eventlog.analyst import (
    AnalystLimits,
    analyst_query_problem,
    engine_table_functions,
    run_analyst_query,
)
from processors.eventlog.clickhouse import EVENT_COLUMNS, EVENTS_TABLE, JOB_VIEW, connect, connect_analyst
from processors.eventlog.generations import GENERATIONS_TABLE
from processors.eventlog.job_facts import GROUPS_VIEW
from processors.job_states import JobState

T0 = dt.datetime(2026, 11, 21, 12, 0, tzinfo=dt.UTC)
T0_S = int(T0.timestamp())
PARAMS = {"since_ms": 0, "bucket_s": 60, "by": ""}


def _event(
    job: str, stage: str, state: str, s: float, reason: str = "", attempt: int = 0, **attrs: str
) -> list:
    values = {
        "event_id": f"{job}-{stage}-{state}-{attempt}-{s}",
        "job_id": job,
        "stage": stage,
        "state": state,
        "at": T0 + dt.timedelta(seconds=s),
        "duration_ms": 10.0 if stage != "quality" else 100.0,
        "reason": reason,
        "detail": "",
        "attempt": attempt,
        "attributes": attrs,
        "submitted_at": T0,
        "worker": "test",
    }
    return [values[c] for c in EVENT_COLUMNS]


# a: passes first time, published in the first minute. b: a blank first attempt, passes the second
# (second minute), published. c: fails twice, sent to review flagged, rejected by a reviewer.
# d: fails on the quality gate for good. e: its product could not be fetched.
ROWS = [
    _event("a", "intake", "pending", 0),
    _event("a", "quality", "completed", 10),
    _event("a", "publish", "approved", 20),
    _event("a", "publish", "published", 20),
    _event("b", "intake", "pending", 0),
    _event("b", "quality", "retry", 15, reason="blank_output"),
    _event("b", "quality", "completed", 70, attempt=1),
    _event("b", "publish", "published", 80, attempt=1),
    _event("c", "intake", "pending", 1),
    _event("c", "quality", "retry", 20, reason="product_not_preserved"),
    _event("c", "quality", "completed", 75, attempt=1, needs_review="true"),
    _event("c", "publish", "in_review", 76, reason="needs_review", attempt=1),
    _event("c", "publish", "rejected", 90, reason="reviewer_rejected", attempt=1),
    _event("d", "intake", "pending", 2),
    _event("d", "quality", "failed", 30, reason="quality_rejection"),
    _event("e", "intake", "pending", 3),
    _event("e", "references", "failed", 4, reason="missing_source_file"),
]


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    settings = load_settings()
    settings.clickhouse.embedded_path = str(tmp_path_factory.mktemp("chdb-named"))
    return settings


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[Client]:
    # One engine per process: closed at the module's end, so another module's (another path) opens.
    client = connect(settings)
    client.insert(f"lightbox.{EVENTS_TABLE}", [*ROWS, ROWS[-1]], column_names=EVENT_COLUMNS)
    yield client
    client.close()


@pytest.fixture(scope="module")
def analyst(client: Client, settings: Settings) -> Iterator[Client]:
    analyst = connect_analyst(settings)
    yield analyst
    analyst.close()


def _rows(client: Client, name: str) -> list[dict[str, Any]]:
    query = named.load(name)
    values = {k: v for k, v in PARAMS.items() if k in query.params}
    return named.rows_of(named.run(client, "lightbox", name, **values))


def test_every_named_query_is_one_read_only_statement_on_the_event_log() -> None:
    assert set(named.SUMMARY_QUERIES) <= set(named.names())
    for name in named.names():
        query = named.load(name)
        assert query.description, f"{name}.sql says nothing about what it asks"
        # The events table, or the latest-state-per-job view over it (clickhouse.JOB_VIEW), or
        # that view by job group (job_facts.GROUPS_VIEW), or the generations copied out of the
        # events (generations.GENERATIONS_TABLE).
        tables = (EVENTS_TABLE, JOB_VIEW, GROUPS_VIEW, GENERATIONS_TABLE)
        assert any(f"{{database:Identifier}}.{t}" in query.body for t in tables), name
        values = {k: v for k, v in PARAMS.items() if k in query.params}
        sql = query.render(database="lightbox", **values)
        assert analyst_query_problem(sql) is None, (name, analyst_query_problem(sql))
        assert not re.search(r"\{\w+:", sql), f"{name}: a parameter was left unbound"


def test_states_named_in_the_sql_are_states_the_pipeline_records() -> None:
    states = {str(s) for s in JobState}
    for name in named.names():
        body = named.load(name).body
        named_states = re.findall(r"state\s*=\s*'(\w+)'", body)
        for group in re.findall(r"state\s+IN\s*\(([^)]*)\)", body):
            named_states += re.findall(r"'(\w+)'", group)
        assert set(named_states) <= states, (name, set(named_states) - states)


@pytest.mark.parametrize(
    ("values", "why"),
    [
        ({"since_ms": True, "bucket_s": 60}, "must be an integer"),
        ({"since_ms": "0; DROP TABLE x", "bucket_s": 60}, "must be an integer"),
        ({"since_ms": 2**63, "bucket_s": 60}, "must be an integer"),
        ({"since_ms": 0, "bucket_s": -1}, "must be an integer"),
        ({"since_ms": 0, "bucket_s": 60, "database": "lightbox` UNION"}, "plain name"),
        ({}, "missing parameter"),
        ({"since_ms": 0, "bucket_s": 60, "extra": 1}, "no parameter"),
    ],
)
def test_parameters_are_bound_only_as_checked_literals(values: dict[str, Any], why: str) -> None:
    values = {"database": "lightbox", **values}
    with pytest.raises(named.NamedQueryError, match=why):
        named.render("artifact_rate_over_time", **values)


def test_strings_are_escaped_and_unknown_names_refused() -> None:
    # Lists of strings (the lifecycle) are bound by the loader itself, quotes escaped.
    assert "'pending'" in named.render("jobs_by_state", database="lightbox", since_ms=0)
    for name in ("../queries", "nope", "Artifact_Rate"):
        with pytest.raises(named.NamedQueryError, match="no named query"):
            named.load(name)


def test_the_summary_from_the_named_queries(client: Client) -> None:
    summary = named.summary(client, "lightbox")
    assert summary["jobs_by_state"] == {"published": 2, "rejected": 1, "failed": 2}
    assert summary["published"] == 2
    assert summary["latency_ms"]["max"] == 80_000
    # Verdicts: a ok, b retry + ok, c retry + flagged, d rejected: 4 of 6 were artifacts.
    assert summary["quality_verdicts"] == 6
    assert summary["artifact_rate"] == pytest.approx(4 / 6)
    # First attempts scored: a, b, c, d; only a passed then.
    assert summary["first_pass_scored"] == 4
    assert summary["first_pass_yield"] == pytest.approx(1 / 4)
    reasons = {(r["stage"], r["reason"]): r["count"] for r in summary["reasons"]}
    assert reasons[("references", "missing_source_file")] == 1  # the duplicate row is one event
    assert summary["stage_handler_ms"]["quality"]["events"] == 6


def test_the_series_over_time(client: Client) -> None:
    artifacts = {
        r["bucket"]: (r["verdicts"], r["rejected"]) for r in _rows(client, "artifact_rate_over_time")
    }
    assert artifacts == {T0_S: (4, 3), T0_S + 60: (2, 1)}
    first_pass = {
        r["bucket"]: (r["scored"], r["first_pass"]) for r in _rows(client, "first_pass_yield_over_time")
    }
    assert first_pass == {T0_S: (4, 1)}
    throughput = {r["bucket"]: r for r in _rows(client, "throughput_over_time")}
    assert (throughput[T0_S]["accepted"], throughput[T0_S]["published"]) == (5, 1)
    assert (throughput[T0_S + 60]["published"], throughput[T0_S + 60]["rejected"]) == (1, 1)
    reasons = {(r["bucket"], r["reason"]): r["events"] for r in _rows(client, "failure_reasons_over_time")}
    assert reasons[(T0_S + 60, "reviewer_rejected")] == 1
    assert (T0_S + 60, "needs_review") not in reasons  # a review flag is no failure
    p95 = {(r["bucket"], r["stage"]): r["p95_ms"] for r in _rows(client, "stage_p95_over_time")}
    assert p95[(T0_S, "quality")] == pytest.approx(100.0)


def test_the_named_queries_pass_the_analyst_connections_checks(client: Client, analyst: Client) -> None:
    """The dashboard runs them as analyst SQL: read-only, bounded, functions checked by the
    engine's parser. Each must get through and answer what the service connection answers."""
    limits = AnalystLimits.of(load_settings().clickhouse)
    table_functions = engine_table_functions(analyst)
    for name in named.names():
        query = named.load(name)
        values = {k: v for k, v in PARAMS.items() if k in query.params}
        sql = query.render(database="lightbox", **values)
        answered = run_analyst_query(analyst, sql, limits, table_functions)
        assert answered["rows"] == named.run(client, "lightbox", name, **values)["rows"], name


def test_the_dashboards_series_are_aligned_on_one_time_axis(client: Client) -> None:
    answers = {name: _rows(client, name) for chart in CHARTS for name in chart.queries}
    x = time_axis(T0_S * 1000, (T0_S + 180) * 1000, 60)
    assert x == [T0_S, T0_S + 60, T0_S + 120, T0_S + 180]
    charts = charts_of(answers, x)
    quality = {s["label"]: s["values"] for s in charts["quality"]["series"]}
    assert quality["artifact rate"] == [pytest.approx(3 / 4), pytest.approx(1 / 2), None, None]
    assert quality["first-pass yield"] == [pytest.approx(1 / 4), None, None, None]
    throughput = {s["label"]: s["values"] for s in charts["throughput"]["series"]}
    assert throughput["published"] == [1, 1, 0, 0]
    reasons = {s["label"] for s in charts["failure_reasons"]["series"]}
    assert {"blank_output", "reviewer_rejected", "quality_rejection", "missing_source_file"} <= reasons
    for chart in charts.values():
        assert all(len(s["values"]) == len(x) for s in chart["series"])
