"""The dead-letter tool on the real stack: ls/show, replay after the cause is fixed (once: the
ledger), a letter that fails again comes back with its replay count and is parked, dry runs."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import pytest

from deploy.local.session import expected_job_ids
from gateway.cli.main import main as lightbox
from gateway.ops import dlq
from gateway.ops.replay_ledger import Ledger
from gateway.ops.submit import parse_lines
from processors.config import DlqSettings, Settings
from processors.eventlog.reader import EventLogReader
from processors.kafka_clients import make_producer, produce_and_confirm
from processors.metrics import StageMetrics
from processors.runtime.codec import Codec
from processors.runtime.dlq import REPLAY_COUNT_HEADER, REPLAYED_FROM_HEADER, DeadLetter, Source
from processors.runtime.errors import TransientError
from processors.runtime.outbox import Outbox
from processors.runtime.sizes import MessageLimits
from processors.storage import ObjectStore
from schemas.topics import Topic, TopicNames
from tests.support.catalog import events_for
from tests.support.topics import read_topic

pytestmark = pytest.mark.integration


def _letter_at(settings: Settings, match: Any, timeout_s: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = [letter for letter in dlq.read(settings, idle_timeout_s=10) if match(letter)]
        if found:
            return found[-1]
        time.sleep(1)
    raise AssertionError("no such dead letter")


def _replayed_from(settings: Settings, topic: Topic, letter: dict[str, Any]) -> list[Any]:
    origin = f"dlq/{letter['dlq_partition']}/{letter['dlq_offset']}".encode()
    return [m for m in read_topic(settings, topic) if (REPLAYED_FROM_HEADER, origin) in (m.headers() or [])]


def _timeline(settings: Settings, job_id: str) -> list[dict[str, Any]]:
    return asyncio.run(EventLogReader(settings).timeline(job_id))["events"]


def _wait_for_event(
    settings: Settings, job_id: str, state: str, timeout_s: float = 60
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        events = [e for e in _timeline(settings, job_id) if e["state"] == state]
        if events:
            return events
        time.sleep(0.5)
    raise AssertionError(f"no {state} event for {job_id}")


def _dead_letter_as_intake_would(settings: Settings, event: dict[str, Any]) -> None:
    """A valid catalog event dead-lettered by intake for a cause outside it (its dependency was
    down past its attempts), written exactly as the runtime writes one (its outbox)."""
    codec = Codec.of(settings)
    names = TopicNames(settings.kafka.topic_prefix)
    value = codec.serde(Topic.CATALOG_EVENTS).encode(event)
    source = Source(names(Topic.CATALOG_EVENTS), 0, 10**9, event["product"]["sku"].encode(), value)
    at = int(time.time() * 1000)
    letter = DeadLetter.of(source, "intake", TransientError("registry down"), 3, at, at, fault="unknown")
    outbox = Outbox(
        "intake", (), codec, StageMetrics("intake"), logging.getLogger("t"), MessageLimits(1_000_000)
    )
    produce_and_confirm(make_producer(settings), outbox.dead_letter(letter, None).messages)


def test_a_fixed_letter_replays_to_completion_once(pipeline, catalog_server, capsys, monkeypatch) -> None:
    settings = pipeline.settings
    ((_, event, _),) = parse_lines([json.dumps(events_for(catalog_server, [3], "dlqfix")[0])]).events
    (job_id,) = expected_job_ids([event])
    _dead_letter_as_intake_would(settings, event)
    letter = _letter_at(settings, lambda x: x["original_key"] == event["product"]["sku"].encode())
    p, o = letter["dlq_partition"], letter["dlq_offset"]

    # ls counts it; show decodes the envelope and the original catalog event (the CLI, under
    # this session's topic prefix).
    monkeypatch.setenv("LIGHTBOX_KAFKA__TOPIC_PREFIX", settings.kafka.topic_prefix)
    capsys.readouterr()
    assert lightbox(["dlq", "ls", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    (group,) = [g for g in summary["groups"] if g["partition"] == p and g["error_class"] == "TransientError"]
    assert group["count"] >= 1 and group["stage"] == "intake" and group["parked"] == 0
    assert group["oldest"]["offset"] <= o <= group["newest"]["offset"]
    shown = dlq.show(settings, p, o)
    assert shown["original"]["record"]["event_id"] == event["event_id"]
    assert shown["headers"]["dlq.error.class"] == "TransientError" and not shown["parked"]
    assert lightbox(["dlq", "show", "--partition", str(p), "--offset", str(o)]) == 0
    out = capsys.readouterr().out
    assert "dlq.stage: intake" in out and event["event_id"] in out and "registry down" in out

    argv = ["dlq", "replay", "--partition", str(p), "--from-offset", str(o), "--to-offset", str(o)]
    assert lightbox([*argv, "--reason", "registry fixed"]) == 0
    printed = capsys.readouterr()
    assert "replayed 1 dead letter(s)" in printed.out
    assert "replay progress: 1/1 offsets (100%" in printed.err, "a plain progress line off a terminal"
    replay_id = printed.out.split("replay id ")[1].split(")")[0]
    states = pipeline.wait_for([job_id], timeout_s=180)
    assert states[job_id] == "published"
    (sent,) = _replayed_from(settings, Topic.CATALOG_EVENTS, letter)
    assert (REPLAY_COUNT_HEADER, b"1") in sent.headers()
    (recorded,) = _wait_for_event(settings, event["event_id"], dlq.REPLAYED)
    assert recorded["stage"] == dlq.TOOL_STAGE and recorded["detail"] == "registry fixed"
    assert recorded["attributes"]["replay_id"] == replay_id

    again = dlq.replay(settings, partition=p, start=o, end=o)
    assert again.count == 0 and again.already == [f"{p}/{o} (replay {replay_id})"]
    assert len(_replayed_from(settings, Topic.CATALOG_EVENTS, letter)) == 1, "the second replay sent nothing"
    assert Ledger.load(ObjectStore(settings.storage), dlq.dlq_topic(settings), p).replayed[o] == replay_id
    assert lightbox(argv) == 0
    assert "skipped 1 already replayed" in capsys.readouterr().out


def test_a_letter_failing_again_comes_back_counted_then_parks(pipeline, capsys) -> None:
    settings = pipeline.settings.model_copy(update={"dlq": DlqSettings(max_replays=1)})
    names = TopicNames(settings.kafka.topic_prefix)
    key = f"poison-{time.time_ns()}".encode()
    # On jobs.accepted (the references stage dead-letters it): not catalog.events, whose poison
    # test_dead_letters.py looks for by offset.
    produce_and_confirm(make_producer(settings), [(names(Topic.JOBS_ACCEPTED), key, b"\x00not avro", None)])
    first = _letter_at(settings, lambda x: x["original_key"] == key)
    p, o = first["dlq_partition"], first["dlq_offset"]
    assert first["replays"] == 0 and first["stage"] == "references"
    shown = dlq.show(settings, p, o)
    assert (
        "SerdeError" in shown["original"]["undecodable"] and "not avro" in shown["original"]["bytes_preview"]
    )

    # Filters: a letter of another error class or stage is left alone.
    other = dlq.replay(settings, partition=p, start=o, end=o, selection=dlq.Selection(error_class="Nope"))
    assert (other.count, other.filtered) == (0, 1)
    assert (
        dlq.replay(settings, partition=p, start=o, end=o, selection=dlq.Selection(stage="quality")).filtered
        == 1
    )

    # A dry run says what it would send, and sends nothing, records nothing.
    dry = dlq.replay(settings, partition=p, start=o, end=o, dry_run=True)
    assert dry.count == 1 and dry.dry_run
    assert _replayed_from(settings, Topic.JOBS_ACCEPTED, first) == []
    assert o not in Ledger.load(ObjectStore(settings.storage), dlq.dlq_topic(settings), p).replayed

    report = dlq.replay(settings, partition=p, start=o, end=o)
    assert report.count == 1
    again = _letter_at(settings, lambda x: x["dlq_headers"].get("replay.id") == report.replay_id)
    assert again["replays"] == 1 and again["original_key"] == key and again["dlq_offset"] != o

    q, r = again["dlq_partition"], again["dlq_offset"]
    parked = dlq.replay(settings, partition=q, start=r, end=r)
    assert parked.count == 0 and len(parked.parked) == 1 and "dlq.max_replays = 1" in parked.parked[0]
    assert dlq.show(settings, q, r)["parked"]
    summary = dlq.summarize(settings, idle_timeout_s=10)
    # Other tests' poison shares this pipeline's dlq: the group is this letter's stage and class.
    (group,) = [
        g
        for g in summary["groups"]
        if (g["partition"], g["stage"], g["error_class"]) == (q, "references", "SerdeError")
    ]
    assert group["parked"] >= 1
    assert _wait_for_event(settings, key.decode(), dlq.PARKED)[0]["reason"] == "max_replays"
