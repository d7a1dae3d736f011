"""Intake de-duplication that survives a restart, idempotent resubmission, and persist-first
references: a failed optional reference is dropped and recorded, a failed required one fails the
job loudly while other jobs carry on."""

from __future__ import annotations

import asyncio
import json
import signal
import time

import pytest

from deploy.local.session import expected_job_ids
from processors.eventlog.reader import EventLogReader
from processors.storage import ObjectStore
from tests.support.catalog import events_for

pytestmark = pytest.mark.integration


def _wait_for_state(pipeline, job_id: str, state: str, timeout_s: float = 90) -> dict:
    reader = EventLogReader(pipeline.settings)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        timeline = asyncio.run(reader.timeline(job_id))
        if any(e["state"] == state for e in timeline["events"]):
            return timeline
        pipeline.supervisor.check()  # restart anything the test killed
        time.sleep(0.5)
    raise AssertionError(f"{job_id} never reached {state}: {json.dumps(timeline, default=str)[:2000]}")


def test_dedup_survives_an_intake_restart_and_resubmission_makes_no_new_work(
    pipeline, catalog_server
) -> None:
    (event,) = events_for(catalog_server, [3], "dedup")
    (job_id,) = expected_job_ids([event])
    pipeline.submit([event])
    assert pipeline.wait_for([job_id], 120).get(job_id) == "published"

    for child in pipeline.supervisor.children:
        if child.stage == "intake":
            child.process.send_signal(signal.SIGKILL)
            child.process.wait(10)
    pipeline.supervisor.check()  # restarted: its seen-table must come back from the changelog

    pipeline.submit([event])  # the same event again
    resent = {**event, "event_id": event["event_id"] + "-again"}  # a new event, the same request
    pipeline.submit([resent])

    duplicate = _wait_for_state(pipeline, event["event_id"], "duplicate_event")
    assert [e["reason"] for e in duplicate["events"] if e["state"] == "duplicate_event"] == [
        "duplicate_event_id"
    ]
    job = _wait_for_state(pipeline, job_id, "duplicate_job")
    assert [e["state"] for e in job["events"]].count("pending") == 1, "no second job may start"
    assert job["state"] == "published"


def test_dropped_optional_reference_is_recorded_and_missing_required_one_fails_the_job(
    pipeline, catalog_server
) -> None:
    good, broken = events_for(catalog_server, [4, 5], "refs")
    good["references"].append(
        {"url": f"{catalog_server.url}/no-such-moodboard.jpg", "role": "MOODBOARD", "required": False}
    )
    broken["references"][0]["url"] = f"{catalog_server.url}/no-such-product.png"
    good_id, broken_id = expected_job_ids([good, broken])
    pipeline.submit([good, broken])

    states = pipeline.wait_for([good_id, broken_id], 120)
    assert states == {good_id: "published", broken_id: "failed"}

    reader = EventLogReader(pipeline.settings)
    good_trail = asyncio.run(reader.timeline(good_id))["events"]
    (drop,) = [e for e in good_trail if e["state"] == "dropped_reference"]
    assert drop["reason"] == "http_404"
    assert drop["attributes"]["url"].endswith("/no-such-moodboard.jpg")
    assert drop["attributes"]["required"] == "False"

    failed = [e for e in asyncio.run(reader.timeline(broken_id))["events"] if e["state"] == "failed"]
    assert failed[0]["reason"] == "missing_source_file"
    assert "http_404" in failed[0]["detail"]

    store = ObjectStore(pipeline.settings.storage)
    prefix = pipeline.settings.review.publish_prefix.rstrip("/")
    lineage = json.loads(store.get_bytes(f"{prefix}/{good['product']['sku']}/{good_id}/lineage.json"))
    assert [d["reason"] for d in lineage["dropped_references"]] == ["http_404"]
    assert all("://" not in json.dumps(ref) for ref in lineage["references"]), "no URL past references"
    assert not list(store.list_keys(f"generated/{broken_id}/")), "nothing generated without the product"
