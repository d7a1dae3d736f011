"""One catalog event becomes a published asset, with its whole trail in ClickHouse."""

from __future__ import annotations

import asyncio
import json

import pytest
from PIL import Image

from deploy.local.session import expected_job_ids
from processors.eventlog.reader import EventLogReader
from processors.imaging.derivatives import read_lineage
from processors.storage import ObjectStore
from tests.support.catalog import events_for

pytestmark = pytest.mark.integration


def test_one_event_becomes_a_published_asset_with_full_trail(pipeline, catalog_server) -> None:
    events = events_for(catalog_server, [0], "e2e")
    sku = events[0]["product"]["sku"]
    (job_id,) = expected_job_ids(events)

    pipeline.submit(events)
    states = pipeline.wait_for([job_id], timeout_s=120)
    timeline = asyncio.run(EventLogReader(pipeline.settings).timeline(job_id))
    assert states.get(job_id) == "published", json.dumps(timeline, indent=1, default=str)[:3000]

    trail = [(e["stage"], e["state"]) for e in timeline["events"]]
    for step in [
        ("intake", "pending"),
        ("references", "running"),
        ("prompt", "running"),
        ("generate", "running"),
        ("quality", "completed"),
        ("postprocess", "completed"),
        ("publish", "approved"),
        ("publish", "published"),
    ]:
        assert step in trail, f"missing {step} in {trail}"
    assert all(e["duration_ms"] >= 0 for e in timeline["events"])

    store = ObjectStore(pipeline.settings.storage)
    prefix = f"{pipeline.settings.review.publish_prefix.rstrip('/')}/{sku}/{job_id}/"
    keys = sorted(store.list_keys(prefix))
    assert any(k.endswith("lineage.json") for k in keys), keys
    lineage = json.loads(store.get_bytes(f"{prefix}lineage.json"))
    # Traceability: request, template version, model and version, seed, reviewer.
    assert lineage["event_id"] == events[0]["event_id"]
    assert lineage["prompt"]["template_version"]
    assert lineage["generation"]["model_version"].startswith("compositor")
    assert isinstance(lineage["generation"]["seed"], int)
    assert lineage["review"]["reviewer"] == "policy:auto"
    assert lineage["references"][0]["key"].startswith("refs/sha256/")
    assert "source_references" not in lineage

    images = [k for k in keys if not k.endswith(".json")]
    assert images
    data = store.get_bytes(images[0])
    embedded = read_lineage(data)
    assert embedded["lightbox:job_id"] == job_id
    from io import BytesIO

    with Image.open(BytesIO(data)) as image:
        image.load()


def test_invalid_event_is_rejected_with_reason_and_field(pipeline, catalog_server) -> None:
    (event,) = events_for(catalog_server, [1], "reject", template_id="no-such-template")
    pipeline.submit([event])
    reader = EventLogReader(pipeline.settings)
    for _ in range(120):
        timeline = asyncio.run(reader.timeline(event["event_id"]))
        if timeline["events"]:
            break
        asyncio.run(asyncio.sleep(0.5))
    (rejection,) = [e for e in timeline["events"] if e["state"] == "rejected_event"]
    assert rejection["reason"] == "unknown_template"
    assert rejection["attributes"]["field"] == "request.template_id"


def test_lag_reports_every_stage_and_a_caught_up_intake(pipeline, catalog_server) -> None:
    from gateway.ops.lag import stage_lags

    events = events_for(catalog_server, [5], "lag")
    (job_id,) = expected_job_ids(events)
    pipeline.submit(events)
    assert pipeline.wait_for([job_id], timeout_s=120).get(job_id) == "published"
    # One row per stage and input topic: a stage with two inputs has two.
    lags = {(lag.stage, lag.topic): lag for lag in stage_lags(pipeline.settings)}
    stages = {stage for stage, _ in lags}
    assert {"intake", "references", "prompt", "generate", "quality", "postprocess", "publish"} <= stages
    (intake,) = [
        lag for (stage, topic), lag in lags.items() if stage == "intake" and topic.endswith("catalog.events")
    ]
    assert intake.end >= 1 and intake.lag == 0
