"""Replay from a stage with overrides on the real pipeline: a job replayed from generate with
another model and seed keeps both results and their lineage; compare shows what changed."""

from __future__ import annotations

import asyncio
import json

import pytest

from deploy.local.session import expected_job_ids
from gateway.cli.main import main as lightbox
from gateway.web.jobs_api import stored_record
from processors.eventlog.reader import EventLogReader
from processors.storage import ObjectStore
from schemas.serde import AvroSerde
from schemas.topics import Topic
from tests.support.catalog import events_for
from tests.support.topics import read_topic

pytestmark = pytest.mark.integration


def _record(settings, job_id: str) -> dict:
    events = asyncio.run(EventLogReader(settings).timeline(job_id))["events"]
    where, record = stored_record(
        ObjectStore(settings.storage), AvroSerde("job"), job_id, events, settings.kafka.topic_prefix
    )
    assert where == "published", f"{job_id}: no published lineage"
    return record


def test_replay_from_generate_with_another_model_keeps_both(
    pipeline, catalog_server, capsys, monkeypatch
) -> None:
    settings = pipeline.settings
    for name, value in {
        "KAFKA__TOPIC_PREFIX": settings.kafka.topic_prefix,
        "CLICKHOUSE__QUERY_PORT": str(settings.clickhouse.query_port),
        "CLICKHOUSE__EMBEDDED_PATH": settings.clickhouse.embedded_path,
    }.items():
        monkeypatch.setenv(f"LIGHTBOX_{name}", value)
    events = events_for(catalog_server, [4], "rplstage")
    (original,) = expected_job_ids(events)
    pipeline.submit(events)
    assert pipeline.wait_for([original], timeout_s=180)[original] == "published"
    capsys.readouterr()

    # A dry run says what would change and sends nothing; --where selects through the analyst path.
    before = len(read_topic(settings, Topic.GENERATION_REQUESTS))
    where = f"job_id = '{original}' AND state = 'published'"
    assert (
        lightbox(["replay", "--stage", "generate", "--where", where, "--set", "seed=4242", "--dry-run"]) == 0
    )
    out = capsys.readouterr().out
    assert f"job {original} (generation.requests/" in out and "would re-send" in out
    assert "seed None → 4242" in out
    assert len(read_topic(settings, Topic.GENERATION_REQUESTS)) == before

    argv = [
        "replay",
        "--stage",
        "generate",
        "--job",
        original,
        "--set",
        "model=sd-turbo",
        "--set",
        "seed=4242",
    ]
    assert lightbox(argv) == 0
    out = capsys.readouterr().out
    replay = out.split(" as job ")[1].split(":")[0]
    assert "routed_model compositor → sd-turbo" in out
    assert pipeline.wait_for([replay], timeout_s=180)[replay] == "published"

    first, second = _record(settings, original), _record(settings, replay)
    assert second["replay_of"] == original and first["replay_of"] is None
    assert second["route"]["model"] == "sd-turbo" and first["route"]["model"] == "compositor"
    assert second["generation"]["seed"] == 4242 and first["generation"]["seed"] != 4242
    assert second["asset_key"] != first["asset_key"], "both results kept, each its own image"

    assert lightbox(["compare", original, replay, "--json"]) == 0
    compared = json.loads(capsys.readouterr().out)
    assert compared["replay"] is True
    changed = {c["name"]: (c["a"], c["b"]) for c in compared["changed"]}
    assert changed["routed_model"] == ("compositor", "sd-turbo")
    assert changed["seed"][1] == 4242 and changed["replay_of"] == (None, original)
    for side in ("a", "b"):
        assert compared[side]["state"] == "published" and compared[side]["images"]
        assert all(image["url"].startswith("http") for image in compared[side]["images"])
        assert compared[side]["scores"], "each side has its quality scores"
    assert lightbox(["compare", original, replay]) == 0
    assert "what changed (A → B):" in capsys.readouterr().out

    # An unknown override is a usage error before anything is read or sent.
    assert lightbox(["replay", "--stage", "generate", "--job", original, "--set", "colour=red"]) == 2
