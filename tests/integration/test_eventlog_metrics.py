"""`lightbox metrics` and the named SQL behind it, on a real embedded ClickHouse (chDB) holding a
known set of events: p95 per stage, the artifact rate, yield, retry and fallback rates, latency,
GPU time and cost come out as this test computes them itself from the same events; the Grafana
dashboard's panels, macros expanded as the plugin expands them, run on the same engine."""

from __future__ import annotations

import datetime as dt
import json
import random
import re
from collections.abc import Iterator
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client

from deploy.grafana.dashboard import dashboard
from gateway.cli.main import main
from processors.config import CostSettings, Settings, load_settings
from processors.eventlog import named
from processors.eventlog.analyst import AnalystLimits, engine_table_functions, run_analyst_query
from processors.eventlog.clickhouse import EVENT_COLUMNS, EVENTS_TABLE, connect, connect_analyst

pytestmark = pytest.mark.integration

T0 = dt.datetime(2026, 10, 5, 9, 0, tzinfo=dt.UTC)
T0_MS = int(T0.timestamp() * 1000)
JOBS = 30
COSTS = CostSettings()


def _events() -> list[dict[str, Any]]:
    """Thirty jobs: most pass first time; every sixth needs a retry, another is flagged for a
    person (some approved), another fails the gate; some fell back, one was retried as a batch,
    one dead-lettered a message. Handler times are random, so percentiles mean something."""
    rand = random.Random(12)
    events: list[dict[str, Any]] = []

    def add(
        job: str, stage: str, state: str, s: float, reason: str = "", attempt: int = 0, **attrs: str
    ) -> None:
        events.append(
            {
                "event_id": f"{job}-{stage}-{state}-{attempt}-{s}",
                "job_id": job,
                "stage": stage,
                "state": state,
                "at": T0 + dt.timedelta(seconds=s),
                "duration_ms": round(rand.uniform(1, 900), 3),
                "reason": reason,
                "detail": "",
                "attempt": attempt,
                "attributes": attrs,
                "submitted_at": T0 + dt.timedelta(seconds=int(job[1:])),
                "worker": "test",
            }
        )

    for i in range(JOBS):
        job, t = f"j{i:02d}", float(i)
        remote = i % 4 == 0
        backend, model = ("remote", "hosted-x") if remote else ("diffusers", "sdxl")
        usage = {"api_calls": "2"} if remote else {"gpu_ms": str(1000 + 10 * i), "device": "cuda"}
        fell_back = {"fell_back_from": "diffusers:sdxl"} if i % 5 == 0 and remote else {}
        template = "hero@v1" if i % 3 else "lifestyle@v2"
        add(job, "intake", "pending", t, campaign="spring" if i % 2 else "autumn", sku=f"S{i}")
        add(job, "prompt", "running", t + 1, template=template, backend=backend, model=model)
        if i == 11:
            add(job, "generate", "retry", t + 1.5, reason="BackendUnavailable", scope="batch")
        add(
            job,
            "generate",
            "running",
            t + 2,
            backend=backend,
            model=model,
            variants="2",
            **usage,
            **fell_back,
        )
        kind = i % 6
        if kind == 1:  # blank first attempt, passes the second
            add(job, "quality", "retry", t + 3, reason="blank_output", variants="2", rejected_variants="2")
            add(
                job,
                "generate",
                "running",
                t + 4,
                attempt=1,
                backend=backend,
                model=model,
                variants="2",
                **usage,
            )
            add(job, "quality", "completed", t + 5, attempt=1, variants="2", rejected_variants="0")
            add(job, "publish", "published", t + 20 + i % 7, attempt=1)
        elif kind == 2:  # every variant failed: sent on flagged, held for a person
            add(job, "quality", "completed", t + 3, variants="2", rejected_variants="2", needs_review="true")
            add(job, "publish", "in_review", t + 4, reason="needs_review")
            if i % 4 == 2:
                add(job, "publish", "approved", t + 40, reviewer="ana")
                add(job, "publish", "published", t + 40)
            else:
                add(job, "publish", "rejected", t + 40, reason="reviewer_rejected")
        elif kind == 3:  # fails the gate for good
            add(
                job,
                "quality",
                "failed",
                t + 3,
                reason="quality_rejection",
                variants="2",
                rejected_variants="2",
            )
        else:  # passes first time; one variant of two failed on odd jobs
            add(job, "quality", "completed", t + 3, variants="2", rejected_variants=str(i % 2))
            add(job, "postprocess", "running", t + 4)
            add(job, "publish", "published", t + 10 + i % 7)
        if i % 10 == 3:  # budgeted jobs: settlements repeat the terminal event's stage and reason
            last = events[-1]
            settles = "credit_released" if last["state"] == "failed" else "credit_consumed"
            add(job, last["stage"], settles, t + 30, reason=last["reason"], account="acme", amount="1")
        if i == 9:
            add(job, "postprocess", "dead_lettered", t + 5, reason="ObjectFault", attempts="3")
    return events


EVENTS = _events()


def _exact(values: list[float], level: float) -> float:
    """ClickHouse's quantileExact: the value at rank floor(level * n) of the sorted values."""
    ordered = sorted(values)
    return ordered[min(int(level * len(ordered)), len(ordered) - 1)]


def _expected() -> dict[str, Any]:
    """The figures, computed here from EVENTS with the definitions in docs/analytics.md."""
    jobs = sorted({e["job_id"] for e in EVENTS})
    of = {j: [e for e in EVENTS if e["job_id"] == j] for j in jobs}

    def first_verdict(j: str) -> dict[str, Any]:
        return next(e for e in of[j] if e["stage"] == "quality" and e["attempt"] == 0)

    candidates = sum(int(first_verdict(j)["attributes"]["variants"]) for j in jobs)
    rejected = sum(int(first_verdict(j)["attributes"]["rejected_variants"]) for j in jobs)
    retried = [j for j in jobs if any(e["stage"] == "quality" and e["state"] == "retry" for e in of[j])]
    person = [j for j in jobs if any(e["state"] == "in_review" for e in of[j])]
    passed = [
        j
        for j in jobs
        if first_verdict(j)["state"] == "completed"
        and first_verdict(j)["attributes"].get("needs_review") != "true"
    ]
    any_retry = [j for j in jobs if any(e["state"] == "retry" for e in of[j])]
    generated = [e for e in EVENTS if e["stage"] == "generate" and e["state"] == "running"]
    fell_back = {e["job_id"] for e in generated if "fell_back_from" in e["attributes"]}
    published = {e["job_id"]: e["at"] for e in EVENTS if e["state"] == "published"}
    e2e = [(published[j] - of[j][0]["submitted_at"]).total_seconds() * 1000 for j in jobs if j in published]
    gpu_s = sum(float(e["attributes"].get("gpu_ms", 0)) for e in generated) / 1000
    calls = sum(int(e["attributes"].get("api_calls", 0)) for e in generated)
    prices = COSTS.backends
    cost = gpu_s * prices["diffusers"].gpu_second + calls * prices["remote"].api_call
    span_s = (max(e["at"] for e in EVENTS) - min(e["at"] for e in EVENTS)).total_seconds()
    stages = sorted({e["stage"] for e in EVENTS})
    # Credit settlements are the account's, not the stage's work: no time, no verdict, no reason.
    worked = [e for e in EVENTS if not e["state"].startswith("credit_")]
    by_stage = {s: [e["duration_ms"] for e in worked if e["stage"] == s] for s in stages}
    return {
        "jobs": len(jobs),
        "delivered": len(published),
        "artifact_rate": {
            "gate_rejected_first_pass": rejected / candidates,
            "candidates": candidates,
            "rejected_candidates": rejected,
            "needed_retry": len(retried) / len(jobs),
            "needed_person": len(person) / len(jobs),
            "scored_jobs": len(jobs),
        },
        "first_pass_yield": len(passed) / len(jobs),
        "retry_rate": len(any_retry) / len(jobs),
        "fallback_rate": len(fell_back) / len(jobs),
        "e2e": {lvl: _exact(e2e, q) for lvl, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))},
        "gpu_seconds": gpu_s,
        "api_calls": calls,
        "images_per_gpu_hour": len(published) / (gpu_s / 3600),
        "delivered_per_minute": len(published) / (span_s / 60),
        "cost_per_image": cost / len(published),
        "stage_p95": {s: _exact(v, 0.95) for s, v in by_stage.items()},
        "stage_p50": {s: _exact(v, 0.5) for s, v in by_stage.items()},
        "stage_p99": {s: _exact(v, 0.99) for s, v in by_stage.items()},
    }


EXPECTED = _expected()


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    settings = load_settings()
    settings.clickhouse.embedded_path = str(tmp_path_factory.mktemp("chdb-metrics"))
    return settings


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[Client]:
    # One engine per process: closed at the module's end, so another module's (another path) opens.
    client = connect(settings)
    rows = [[e[c] for c in EVENT_COLUMNS] for e in EVENTS]
    # A redelivered copy of one event (same id, later time) is still one event.
    again = dict(EVENTS[5], at=EVENTS[5]["at"] + dt.timedelta(seconds=1))
    client.insert(
        f"lightbox.{EVENTS_TABLE}", [*rows, [again[c] for c in EVENT_COLUMNS]], column_names=EVENT_COLUMNS
    )
    yield client
    client.close()


@pytest.fixture
def cli_env(client: Client, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI reading this engine as it reads a ClickHouse server (clickhouse.url)."""
    monkeypatch.setenv("LIGHTBOX_CLICKHOUSE__URL", f"chdb://{settings.clickhouse.embedded_path}")


def _rows(client: Client, name: str, **values: Any) -> list[dict[str, Any]]:
    return named.rows_of(named.run(client, "lightbox", name, **values))


def test_p95_per_stage_from_the_named_sql_is_the_one_computed_here(client: Client) -> None:
    rows = {r["stage"]: r for r in _rows(client, "stage_time", since_ms=0)}
    assert set(rows) == set(EXPECTED["stage_p95"])
    for stage, row in rows.items():
        assert row["p95_ms"] == pytest.approx(EXPECTED["stage_p95"][stage]), stage
        assert row["p50_ms"] == pytest.approx(EXPECTED["stage_p50"][stage]), stage
        assert row["p99_ms"] == pytest.approx(EXPECTED["stage_p99"][stage]), stage
    assert rows["postprocess"]["dead_letters"] == 1
    assert rows["generate"]["retries"] == 1


def test_a_by_that_is_no_grouping_is_every_job_together_in_every_file(client: Client) -> None:
    # Grafana's "all", an analyst's typo: each file answers as for '' (all jobs, one group).
    for name in ("job_figures", "compute_usage", "stage_time_by_group"):
        everyone = _rows(client, name, since_ms=0, by="")
        for by in ("all", "sku"):
            assert _rows(client, name, since_ms=0, by=by) == everyone, (name, by)
    assert len(_rows(client, "job_figures", since_ms=0, by="all")) == 1


def test_the_artifact_rate_and_job_figures_are_the_ones_computed_here(client: Client) -> None:
    (row,) = _rows(client, "job_figures", since_ms=0, by="")
    expected = EXPECTED["artifact_rate"]
    assert row["jobs"] == EXPECTED["jobs"]
    assert row["delivered"] == EXPECTED["delivered"]
    assert (row["candidates"], row["rejected_candidates"]) == (
        expected["candidates"],
        expected["rejected_candidates"],
    )
    assert row["gate_rejection_rate"] == pytest.approx(expected["gate_rejected_first_pass"])
    assert row["needed_retry_rate"] == pytest.approx(expected["needed_retry"])
    assert row["needed_person_rate"] == pytest.approx(expected["needed_person"])
    assert row["first_pass_yield"] == pytest.approx(EXPECTED["first_pass_yield"])
    assert row["retry_rate"] == pytest.approx(EXPECTED["retry_rate"])
    assert row["fallback_rate"] == pytest.approx(EXPECTED["fallback_rate"])
    assert row["e2e_p95_ms"] == pytest.approx(EXPECTED["e2e"]["p95"])
    assert row["images_per_gpu_hour"] == pytest.approx(EXPECTED["images_per_gpu_hour"])
    # The job-level figures agree with the summary's own files over the same events.
    (fpy,) = _rows(client, "first_pass_yield", since_ms=0)
    assert fpy["first_pass_yield"] == pytest.approx(row["first_pass_yield"])
    (latency,) = _rows(client, "end_to_end_latency", since_ms=0)
    assert latency["p95_ms"] == pytest.approx(row["e2e_p95_ms"])
    assert latency["p99_ms"] == pytest.approx(EXPECTED["e2e"]["p99"])


def test_a_window_counts_only_the_jobs_active_in_it(client: Client) -> None:
    # Jobs j00..j09 had their last event before T0 + 29 s (the flagged j02 and j08 decided at 40+).
    since = T0_MS + 29_500
    (row,) = _rows(client, "job_figures", since_ms=since, by="")
    last = {}
    for e in EVENTS:
        last[e["job_id"]] = max(last.get(e["job_id"], e["at"]), e["at"])
    assert row["jobs"] == sum(1 for at in last.values() if at >= T0 + dt.timedelta(milliseconds=29_500))


def test_lightbox_metrics_json(cli_env: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["metrics", "--since", "all", "--json", "--no-lag"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) == {
        "since_ms",
        "by",
        "currency",
        "totals",
        "stages",
        "failure_reasons",
        "dead_letters",
        "lag",
    }
    totals = report["totals"]
    assert (totals["jobs"], totals["delivered"]) == (EXPECTED["jobs"], EXPECTED["delivered"])
    for key, value in EXPECTED["artifact_rate"].items():
        assert totals["artifact_rate"][key] == pytest.approx(value), key
    assert totals["first_pass_yield"] == pytest.approx(EXPECTED["first_pass_yield"])
    assert totals["end_to_end_ms"] == pytest.approx(EXPECTED["e2e"])
    assert totals["compute"]["gpu_seconds"] == pytest.approx(EXPECTED["gpu_seconds"])
    assert totals["compute"]["api_calls"] == EXPECTED["api_calls"]
    assert totals["throughput"]["delivered_per_minute"] == pytest.approx(EXPECTED["delivered_per_minute"])
    assert totals["cost"]["per_delivered_image"] == pytest.approx(EXPECTED["cost_per_image"])
    assert totals["cost"]["unpriced_backends"] == []
    p95 = {s["stage"]: s["p95_ms"] for s in report["stages"]}
    assert p95 == pytest.approx(EXPECTED["stage_p95"])
    assert report["dead_letters"] == [
        {"stage": "postprocess", "error_class": "ObjectFault", "letters": 1, "oldest_ms": T0_MS + 14_000,
         "newest_ms": T0_MS + 14_000}
    ]  # fmt: skip
    reasons = {(r["stage"], r["reason"]): r["events"] for r in report["failure_reasons"]}
    assert reasons[("quality", "quality_rejection")] == 5


def test_lightbox_metrics_by_backend_and_campaign(cli_env: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["metrics", "--since", "all", "--json", "--no-lag", "--by", "backend"]) == 0
    groups = {g["group"]: g for g in json.loads(capsys.readouterr().out)["groups"]}
    assert {k: g["jobs"] for k, g in groups.items()} == {"diffusers": 22, "remote": 8}
    assert groups["remote"]["compute"]["api_calls"] == EXPECTED["api_calls"]
    assert groups["remote"]["throughput"]["images_per_gpu_hour"] is None
    assert groups["diffusers"]["compute"]["gpu_seconds"] == pytest.approx(EXPECTED["gpu_seconds"])
    assert main(["metrics", "--since", "all", "--json", "--no-lag", "--by", "campaign"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {g["group"]: g["jobs"] for g in report["groups"]} == {"spring": 15, "autumn": 15}
    # No credit events here: the credits section is there, with no accounts.
    assert report["credits"]["accounts"] in ([], None)


def _job_backend() -> dict[str, str]:
    """Each job's backend as job_latest defines it: the latest one prompt or generate recorded."""
    latest: dict[str, tuple[dt.datetime, str]] = {}
    for e in EVENTS:
        backend = e["attributes"].get("backend")
        newer = e["job_id"] not in latest or e["at"] >= latest[e["job_id"]][0]
        if e["stage"] in ("prompt", "generate") and backend and newer:
            latest[e["job_id"]] = (e["at"], backend)
    return {job: backend for job, (_, backend) in latest.items()}


def test_p95_per_stage_by_backend_is_the_one_computed_here(
    cli_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["metrics", "--since", "all", "--json", "--no-lag", "--by", "backend"]) == 0
    rows = json.loads(capsys.readouterr().out)["group_stages"]
    backend_of = _job_backend()
    worked = [e for e in EVENTS if not e["state"].startswith("credit_")]
    expected: dict[tuple[str, str], list[float]] = {}
    for e in worked:
        expected.setdefault((e["stage"], backend_of.get(e["job_id"], "")), []).append(e["duration_ms"])
    assert {(r["stage"], r["group"]) for r in rows} == set(expected)
    assert len({r["group"] for r in rows}) >= 2, "more than one backend, or the split shows nothing"
    for row in rows:
        durations = expected[(row["stage"], row["group"])]
        assert row["events"] == len(durations)
        assert row["p95_ms"] == pytest.approx(_exact(durations, 0.95)), (row["stage"], row["group"])
        assert row["p50_ms"] == pytest.approx(_exact(durations, 0.5)), (row["stage"], row["group"])


def test_lightbox_metrics_text_and_errors(cli_env: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["metrics", "--since", "all", "--no-lag", "--by", "stage"]) == 0
    out = capsys.readouterr().out
    assert "artifact rate: gate rejected" in out and "per stage (handler ms)" in out
    assert main(["metrics", "--since", "yesterday"]) == 2
    assert "--since must be a span like 30m" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["metrics", "--by", "colour"])
    assert exit_.value.code == 2


def test_lightbox_metrics_reports_consumer_lag_per_group(
    cli_env: None,
    stack_settings: Settings,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LIGHTBOX_KAFKA__BOOTSTRAP", stack_settings.kafka.bootstrap)
    monkeypatch.setenv("LIGHTBOX_KAFKA__TOPIC_PREFIX", stack_settings.kafka.topic_prefix)
    assert main(["metrics", "--since", "all", "--json"]) == 0
    lag = json.loads(capsys.readouterr().out)["lag"]
    assert isinstance(lag, list) and lag, lag
    assert {"stage", "group", "topic", "lag"} == set(lag[0])
    assert all(row["lag"] >= 0 for row in lag)


# -- the Grafana dashboard -------------------------------------------------------------------

FROM_MS, TO_MS, INTERVAL_S = T0_MS, T0_MS + 3_600_000, 60


def _expand(sql: str, by: str = "all") -> str:
    """The grafana-clickhouse-datasource plugin's macros and the dashboard's variables, expanded
    as Grafana expands them before the query reaches ClickHouse."""
    sql = re.sub(
        r"\$__timeFilter\((\w+)\)",
        lambda m: (
            f"{m.group(1)} >= toDateTime({FROM_MS // 1000}) AND {m.group(1)} <= toDateTime({TO_MS // 1000})"
        ),
        sql,
    )
    return (
        sql.replace("$__fromTime", f"toDateTime(intDiv({FROM_MS},1000))")
        .replace("$__toTime", f"toDateTime(intDiv({TO_MS},1000))")
        .replace("$__interval_s", str(INTERVAL_S))
        .replace("${database}", "lightbox")
        .replace("${by}", by)
    )


def test_every_grafana_panel_runs_on_the_embedded_engine(client: Client, settings: Settings) -> None:
    analyst = connect_analyst(settings)
    try:
        limits = AnalystLimits.of(settings.clickhouse)
        functions = engine_table_functions(analyst)
        panels = dashboard()["panels"]
        assert {p["description"].rsplit("/", 1)[1].removesuffix(".sql)") for p in panels} == set(
            named.names()
        )
        answered = {}
        for panel in panels:
            (target,) = panel["targets"]
            sql = _expand(target["rawSql"])
            assert "$" not in sql, (panel["title"], sql)
            answered[panel["title"]] = run_analyst_query(analyst, sql, limits, functions)
    finally:
        analyst.close()
    # The panels answer what the named files answer (since T0, the range's start).
    figures = answered[named.load("job_figures").title]
    assert figures["rows"] == named.run(client, "lightbox", "job_figures", since_ms=FROM_MS, by="")["rows"]
    stage_time = answered[named.load("stage_time").title]
    assert stage_time["rows"] == named.run(client, "lightbox", "stage_time", since_ms=FROM_MS)["rows"]
    # A series has Grafana's time column, on the panel's interval.
    series = answered[named.load("throughput_over_time").title]
    assert series["columns"][0] == "time" and "bucket" not in series["columns"]
    published = sum(row[series["columns"].index("published")] for row in series["rows"])
    assert published == EXPECTED["delivered"]


def test_lightbox_metrics_through_the_running_sink(
    pipeline: Any, catalog_server: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the embedded engine the CLI asks the eventlog stage (its analyst endpoint), as the
    gateway dashboard does: a job that ran through the pipeline is in the figures."""
    from deploy.local.session import expected_job_ids
    from tests.support.catalog import events_for

    (event,) = events_for(catalog_server, [3], "metrics-cli")
    (job_id,) = expected_job_ids([event])
    pipeline.submit([event])
    assert pipeline.wait_for([job_id], timeout_s=120).get(job_id) == "published"
    monkeypatch.setenv("LIGHTBOX_CLICKHOUSE__QUERY_PORT", str(pipeline.settings.clickhouse.query_port))
    monkeypatch.setenv("LIGHTBOX_KAFKA__TOPIC_PREFIX", pipeline.settings.kafka.topic_prefix)
    assert main(["metrics", "--since", "1h", "--json", "--by", "backend"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["totals"]["delivered"] >= 1
    assert report["totals"]["compute"]["cpu_seconds"] > 0  # the compositor's CPU time, recorded by generate
    assert "compositor" in {g["group"] for g in report["groups"]}
    stages = {s["stage"] for s in report["stages"]}
    assert {"intake", "references", "prompt", "generate", "quality", "postprocess", "publish"} <= stages
    groups = {row["group"] for row in report["lag"]}
    assert all(g.startswith(pipeline.settings.kafka.topic_prefix) for g in groups), groups
