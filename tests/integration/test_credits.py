"""Credits on the real stack (Kafka, MinIO, the registry, the embedded event log), every stage as
its own process with a credit account configured: intake reserves each job's cost, the job's
terminal event settles it (a published job consumes; a job failed for a missing reference and one
a reviewer rejected release, each with its reason), a release read back by intake frees budget
for a later request, a request over budget is rejected with the figures, intake restarted
(SIGKILL) keeps the balance, and the event log balances: reserved = consumed + released per
account (processors/eventlog/sql/credits_by_account.sql). Review is on hold, so a reviewer's
decision (a record that is not the job) settles too."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient

from deploy.local.session import PipelineSession, expected_job_ids, free_port
from gateway.ops.review import submit_decision
from processors.config import Settings
from processors.eventlog import named
from processors.eventlog.reader import EventLogReader
from processors.intake.settlements import GROUP_SUFFIX
from processors.kafka_clients import group_id_for
from schemas.topics import Topic, TopicNames
from tests.support.catalog import events_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = "credits-test"
BUDGET = 4  # jobs: each event below makes one job, at the default cost of 1 credit


@pytest.fixture(scope="module")
def credits_pipeline(stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The whole pipeline under its own prefix, with one account covering campaign `campaign`."""
    clickhouse_dir = tmp_path_factory.mktemp("clickhouse-credits")
    query_port = free_port()
    campaign = f"credits-{uuid.uuid4().hex[:6]}"
    accounts = {ACCOUNT: {"budget": BUDGET, "campaigns": [campaign]}}
    settings = stack_settings.model_copy(
        update={
            "clickhouse": stack_settings.clickhouse.model_copy(
                update={"embedded_path": str(clickhouse_dir), "query_port": query_port}
            ),
        }
    )
    env = {
        "LIGHTBOX_CLICKHOUSE__EMBEDDED_PATH": str(clickhouse_dir),
        "LIGHTBOX_CLICKHOUSE__QUERY_PORT": str(query_port),
        "LIGHTBOX_STAGE__BACKOFF_INITIAL_S": "0.05",
        "LIGHTBOX_STAGE__MAX_ATTEMPTS": "3",
        "LIGHTBOX_CREDITS__ACCOUNTS": json.dumps(accounts),
        "LIGHTBOX_CREDITS__DEFAULT_JOB_COST": "1",
        "LIGHTBOX_REVIEW__POLICY": "hold",
    }
    session = PipelineSession(settings, prefix=f"test-credits-{uuid.uuid4().hex[:8]}.", env=env)
    session.campaign = campaign  # type: ignore[attr-defined]
    session.start(start_stack=False)
    yield session
    session.stop()


def _events(pipeline: Any, server: Any, indices: list[int], tag: str) -> list[dict[str, Any]]:
    events = events_for(server, indices, tag)
    for event in events:
        event["campaign"] = pipeline.campaign
    return events


def _timeline(pipeline: Any, job_id: str) -> list[dict[str, Any]]:
    return asyncio.run(EventLogReader(pipeline.settings).timeline(job_id))["events"]


def _wait_for_event(pipeline: Any, job_id: str, state: str, timeout_s: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = [e for e in _timeline(pipeline, job_id) if e["state"] == state]
        if found:
            return found[0]
        for note in pipeline.supervisor.check():  # restarts a killed stage
            pipeline.progress(note)
        time.sleep(0.5)
    raise AssertionError(f"no {state} event for {job_id} within {timeout_s}s: {_timeline(pipeline, job_id)}")


def _settlement_lag(settings: Settings) -> int:
    """How many pipeline events intake's settlement reader has not committed yet."""
    group = group_id_for(settings, GROUP_SUFFIX)
    topic = TopicNames(settings.kafka.topic_prefix)(Topic.PIPELINE_EVENTS)
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap})
    probe = Consumer({"bootstrap.servers": settings.kafka.bootstrap, "group.id": "lightbox.lag-probe"})
    try:
        partitions = [
            TopicPartition(topic, p) for p in probe.list_topics(topic, timeout=10).topics[topic].partitions
        ]
        request = [ConsumerGroupTopicPartitions(group, partitions)]
        committed = admin.list_consumer_group_offsets(request)[group].result().topic_partitions
        lag = 0
        for tp in committed:
            _, high = probe.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=10)
            lag += high - max(tp.offset, 0)
        return lag
    finally:
        probe.close()


def _wait_until_intake_read_every_settlement(pipeline: Any, timeout_s: float = 60) -> None:
    """The reader commits pipeline.events only once it has queued what it read for intake's next
    batch: lag 0 means every settlement sent so far is applied before the next request."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _settlement_lag(pipeline.settings) == 0:
            return
        time.sleep(0.5)
    raise AssertionError("intake's settlement reader did not catch up with pipeline.events")


def _credits(pipeline: Any) -> dict[str, dict[str, float]]:
    sql = named.render("credits_by_account", database=pipeline.settings.clickhouse.database, since_ms=0)
    result = asyncio.run(EventLogReader(pipeline.settings).sql(sql))
    return {row["account"]: row for row in named.rows_of(result)}


def _assert_over_budget(event: dict[str, Any], committed: float) -> None:
    assert (event["state"], event["reason"]) == ("rejected_event", "over_budget"), event
    attributes = event["attributes"]
    assert attributes["field"] == "campaign"
    assert attributes["account"] == ACCOUNT
    assert float(attributes["budget"]) == BUDGET
    assert float(attributes["committed"]) == committed
    assert float(attributes["cost"]) == 1.0


def _decide(pipeline: Any, decisions: dict[str, str]) -> None:
    for job_id, decision in decisions.items():
        submit_decision(
            pipeline.settings, job_id, decision, "ana", "" if decision == "APPROVE" else "off-brand"
        )


def test_credits_reserve_settle_free_reject_survive_a_restart_and_balance(
    credits_pipeline: Any, catalog_server: Any
) -> None:
    pipeline = credits_pipeline
    tag = uuid.uuid4().hex[:6]
    good, broken, other, refused = _events(pipeline, catalog_server, [0, 1, 2, 3], f"cr-{tag}")
    broken["references"][0]["url"] = f"{catalog_server.url}/no-such-product.png"
    first = expected_job_ids([good, broken, other, refused])
    good_id, broken_id, other_id, refused_id = first

    # Four jobs, four credits: the budget, exactly.
    pipeline.submit([good, broken, other, refused])
    held = pipeline.wait_for(first, timeout_s=180)
    assert held == {good_id: "in_review", broken_id: "failed", other_id: "in_review", refused_id: "in_review"}
    reserved = _wait_for_event(pipeline, good_id, "credit_reserved")
    assert reserved["attributes"]["account"] == ACCOUNT and float(reserved["attributes"]["amount"]) == 1.0
    _decide(pipeline, {good_id: "APPROVE", other_id: "APPROVE", refused_id: "REJECT"})
    assert _wait_for_event(pipeline, good_id, "credit_consumed")["attributes"]["settles"] == "published"
    _wait_for_event(pipeline, other_id, "credit_consumed")
    released = _wait_for_event(pipeline, broken_id, "credit_released")
    assert (released["reason"], released["attributes"]["settles"]) == ("missing_source_file", "failed")
    rejected = _wait_for_event(pipeline, refused_id, "credit_released")
    assert (rejected["reason"], rejected["attributes"]["settles"]) == ("reviewer_rejected", "rejected")

    # The two released credits are free again: two more jobs fit, and then the budget is spent.
    _wait_until_intake_read_every_settlement(pipeline)
    late = _events(pipeline, catalog_server, [4, 5], f"cr-late-{tag}")
    late_ids = expected_job_ids(late)
    pipeline.submit(late)
    for job_id in late_ids:
        _wait_for_event(pipeline, job_id, "credit_reserved")
    (over,) = _events(pipeline, catalog_server, [0], f"cr-over-{tag}")
    pipeline.submit([over])
    _assert_over_budget(_wait_for_event(pipeline, str(over["event_id"]), "rejected_event"), BUDGET)
    assert _timeline(pipeline, expected_job_ids([over])[0]) == [], "a rejected request makes no job"

    # Intake killed and restarted: its ledger comes back from the changelog, still full.
    (intake,) = [c for c in pipeline.supervisor.children if c.stage == "intake"]
    pid = intake.pid
    intake.process.send_signal(signal.SIGKILL)
    (after,) = _events(pipeline, catalog_server, [1], f"cr-after-{tag}")
    pipeline.submit([after])
    _assert_over_budget(_wait_for_event(pipeline, str(after["event_id"]), "rejected_event"), BUDGET)
    assert intake.pid != pid, "intake really was restarted"

    # The event log balances: every reservation consumed or released, none twice.
    assert pipeline.wait_for(late_ids, timeout_s=180) == dict.fromkeys(late_ids, "in_review")
    _decide(pipeline, dict.fromkeys(late_ids, "APPROVE"))
    for job_id in late_ids:
        _wait_for_event(pipeline, job_id, "credit_consumed")
    row = _credits(pipeline)[ACCOUNT]
    assert (row["reserved"], row["consumed"], row["released"]) == (6.0, 4.0, 2.0), row
    assert row["reserved"] == row["consumed"] + row["released"]

    # `lightbox credits --json` says the same, beside the budget.
    shown = subprocess.run(
        [sys.executable, "-m", "gateway.cli.main", "credits", "--json"],
        env={**os.environ, **pipeline.env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    (account,) = [a for a in json.loads(shown.stdout)["accounts"] if a["account"] == ACCOUNT]
    assert account == {
        "account": ACCOUNT,
        "budget": BUDGET,
        "committed": 4.0,
        "reserved": 6.0,
        "consumed": 4.0,
        "released": 2.0,
        "outstanding": 0.0,
    }
