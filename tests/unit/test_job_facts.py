"""The per-job facts (processors/eventlog/job_facts.py) and the generations copied out of the
events (processors/eventlog/generations.py) stay exact however events reach them: a batch
inserted twice, one job's events over many inserts, a rebuild beside live inserts. And
clickhouse.ttl_days reaches tables that already exist. On the embedded engine."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client

from processors.config import Settings, load_settings
from processors.eventlog.clickhouse import EVENT_COLUMNS, EVENTS_TABLE, connect
from processors.eventlog.generations import GENERATIONS_TABLE, ensure_generations
from processors.eventlog.job_facts import FACTS_TABLE, JOB_VIEW, ensure_job_facts

T0 = dt.datetime(2026, 11, 2, 9, 0, tzinfo=dt.UTC)


def _events() -> list[dict[str, Any]]:
    """Three jobs: one published after a quality retry and a fallback, one failed by the gate,
    one dead-lettered in postprocess."""
    rows: list[dict[str, Any]] = []

    def add(
        job: str, stage: str, state: str, s: int, attempt: int = 0, reason: str = "", **attrs: str
    ) -> None:
        rows.append(
            {
                "event_id": f"{job}-{stage}-{state}-{attempt}",
                "job_id": job,
                "stage": stage,
                "state": state,
                "at": T0 + dt.timedelta(seconds=s),
                "duration_ms": float(s * 10),
                "reason": reason,
                "detail": "",
                "attempt": attempt,
                "attributes": attrs,
                "submitted_at": T0,
                "worker": "test",
            }
        )

    for job in ("a", "b", "c"):
        add(job, "intake", "pending", 0, sku=f"sku-{job}", campaign="spring")
        add(job, "prompt", "running", 1, template="t1@v2", model="m1", backend="diffusers")
        add(job, "generate", "running", 2, variants="2", gpu_ms="1500", model="m1", backend="diffusers")
    add("a", "quality", "retry", 3, reason="blank_output", variants="2", rejected_variants="2")
    add("a", "generate", "running", 4, 1, variants="2", api_calls="1", model="hosted", backend="remote",
        fell_back_from="diffusers")  # fmt: skip
    add("a", "quality", "completed", 5, 1, variants="2", rejected_variants="1")
    add("a", "publish", "published", 9, 1)
    add("b", "quality", "failed", 3, reason="quality_rejection", variants="2")
    add("b", "quality", "failed", 3, reason="quality_rejection", variants="2")  # the same event again
    add("c", "quality", "completed", 3, variants="2", rejected_variants="0")
    add("c", "postprocess", "dead_lettered", 4, reason="ObjectFault")
    return rows


def _insert(client: Client, events: list[dict[str, Any]]) -> None:
    client.insert(
        f"lightbox.{EVENTS_TABLE}",
        [[e[c] for c in EVENT_COLUMNS] for e in events],
        column_names=EVENT_COLUMNS,
    )


def _jobs(client: Client, database: str = "lightbox") -> dict[str, dict[str, Any]]:
    result = client.query(f"SELECT * FROM {database}.{JOB_VIEW} ORDER BY job_id")
    return {row[0]: dict(zip(result.column_names, row, strict=True)) for row in result.result_rows}


@pytest.fixture
def settings(tmp_path) -> Settings:  # type: ignore[no-untyped-def]
    settings = load_settings()
    settings.clickhouse.embedded_path = str(tmp_path / "chdb")
    return settings


@pytest.fixture
def client(settings: Settings) -> Iterator[Client]:
    client = connect(settings)
    yield client
    client.close()


def test_the_facts_are_the_jobs(client: Client) -> None:
    _insert(client, _events())
    jobs = _jobs(client)
    a, b, c = jobs["a"], jobs["b"], jobs["c"]
    assert (a["job_state"], b["job_state"], c["job_state"]) == ("published", "failed", "completed")
    assert (a["model"], a["backend"], a["template"], a["sku"]) == ("hosted", "remote", "t1@v2", "sku-a")
    assert a["end_to_end_ms"] == 9000 and b["end_to_end_ms"] is None
    assert (a["generations"], a["images_generated"], a["fell_back"], a["api_calls"]) == (2, 4, 1, 1)
    assert a["gpu_seconds"] == pytest.approx(1.5)
    assert (a["verdicts"], a["rejected_verdicts"], a["quality_retried"], a["first_passed"]) == (2, 1, 1, 0)
    assert (a["first_candidates"], a["first_rejected_candidates"]) == (2, 2)
    # b's verdict arrived twice with one id: one verdict, all its candidates rejected.
    assert (b["verdicts"], b["rejected_verdicts"], b["first_rejected_candidates"]) == (1, 1, 2)
    assert b["failure_reason"] == "quality_rejection"
    assert (c["first_passed"], c["first_rejected_candidates"], c["dead_letters"]) == (1, 0, 1)


def test_a_batch_inserted_twice_changes_nothing(client: Client) -> None:
    _insert(client, _events())
    once = _jobs(client)
    _insert(client, _events())  # the sink redelivered everything after a crash
    assert _jobs(client) == once


def test_one_job_s_events_over_many_inserts_add_up_to_one_insert(settings: Settings, client: Client) -> None:
    _insert(client, _events())
    together = _jobs(client)
    settings.clickhouse.database = "apart"
    apart = connect(settings)
    for event in _events():
        apart.insert(f"apart.{EVENTS_TABLE}", [[event[c] for c in EVENT_COLUMNS]], column_names=EVENT_COLUMNS)
    assert _jobs(apart, "apart") == together


def test_a_rebuilt_facts_table_matches_the_live_one(client: Client) -> None:
    events = _events()
    _insert(client, events[:10])
    # A facts table of an older generation is rebuilt from the events, and the rest arrive live.
    client.command(f"ALTER TABLE lightbox.{FACTS_TABLE} MODIFY COMMENT 'lightbox job facts 0'")
    assert ensure_job_facts(client, "lightbox", 0) is True
    assert ensure_job_facts(client, "lightbox", 0) is False
    _insert(client, events[5:])  # overlapping what the rebuild already folded in
    rebuilt = _jobs(client)
    client.command(f"TRUNCATE TABLE lightbox.{FACTS_TABLE}")
    client.command(f"ALTER TABLE lightbox.{FACTS_TABLE} MODIFY COMMENT 'stale'")
    ensure_job_facts(client, "lightbox", 0)
    assert rebuilt == _jobs(client)
    assert rebuilt["a"]["job_state"] == "published"


def _generations(client: Client) -> list[tuple[Any, ...]]:
    return client.query(
        f"SELECT job_id, at, backend, model, variants, gpu_ms, cpu_ms, api_calls "
        f"FROM lightbox.{GENERATIONS_TABLE} FINAL ORDER BY job_id, at"
    ).result_rows


def test_generations_are_the_generate_events_once_each_with_their_compute(client: Client) -> None:
    events = _events()
    _insert(client, events)
    # A batch redone after a crash: the same generation again, recorded later; the first counts.
    again = dict(next(e for e in events if e["job_id"] == "a" and e["stage"] == "generate"))
    again["at"] = T0 + dt.timedelta(seconds=30)
    _insert(client, [again, *events])
    rows = _generations(client)
    assert [(r[0], r[1].second, r[2], r[3], r[4], r[5], r[7]) for r in rows] == [
        ("a", 2, "diffusers", "m1", 2, 1500.0, 0),
        ("a", 4, "remote", "hosted", 2, 0.0, 1),
        ("b", 2, "diffusers", "m1", 2, 1500.0, 0),
        ("c", 2, "diffusers", "m1", 2, 1500.0, 0),
    ]
    # The job view's compute (summed from its own per-id maps) agrees with the table's.
    jobs = _jobs(client)
    assert sum(j["gpu_seconds"] for j in jobs.values()) == pytest.approx(sum(r[5] for r in rows) / 1000)
    # A table of another layout is rebuilt from the events, to the same rows.
    client.command(f"ALTER TABLE lightbox.{GENERATIONS_TABLE} MODIFY COMMENT 'lightbox generations 0'")
    assert ensure_generations(client, "lightbox", 0) is True
    assert ensure_generations(client, "lightbox", 0) is False
    assert _generations(client) == rows


def _ttl(client: Client, table: str) -> str:
    engine = str(
        client.command(
            "SELECT engine_full FROM system.tables WHERE database = 'lightbox' AND name = {t:String}",
            parameters={"t": table},
        )
    )
    return engine.split(" TTL ", 1)[1].split(" SETTINGS", 1)[0] if " TTL " in engine else ""


def test_ttl_days_reaches_tables_that_exist(settings: Settings, client: Client) -> None:
    assert _ttl(client, EVENTS_TABLE) == _ttl(client, FACTS_TABLE) == ""
    settings.clickhouse.ttl_days = 30
    connect(settings)
    assert "toIntervalDay(30)" in _ttl(client, EVENTS_TABLE)
    assert "last_at" in _ttl(client, FACTS_TABLE) and "toIntervalDay(30)" in _ttl(client, FACTS_TABLE)
    assert "toIntervalDay(30)" in _ttl(client, GENERATIONS_TABLE)
    settings.clickhouse.ttl_days = 7
    connect(settings)
    assert "toIntervalDay(7)" in _ttl(client, EVENTS_TABLE)
    settings.clickhouse.ttl_days = 0
    connect(settings)
    assert _ttl(client, EVENTS_TABLE) == _ttl(client, FACTS_TABLE) == _ttl(client, GENERATIONS_TABLE) == ""
