"""Intake de-duplicates an event only in its product's slot partition: anywhere else, whatever its
key, it republishes the event there keyed by SKU and records `rekeyed`. Two intake processes
with null-keyed events are tests/integration/test_intake_dedup.py."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from processors.config import load_settings
from processors.intake.slot import slot_partition
from processors.runtime.records import InputRecord, Outcome
from processors.runtime.stage import StageContext
from processors.stages.intake import IntakeStage
from processors.state.layout import ChangelogLayout
from schemas.topics import Topic
from tests.fixtures.avro_samples import CATALOG_V1

PARTITIONS = 3
LAYOUT = ChangelogLayout("catalog.events", "intake.seen", PARTITIONS)
SKU = "SKU-1"
HOME = slot_partition(SKU, PARTITIONS)
ELSEWHERE = (HOME + 1) % PARTITIONS


def record(partition: int, key: bytes | None, offset: int = 1, **changes: Any) -> InputRecord:
    event = copy.deepcopy(CATALOG_V1)
    event["request"].update(variants=1, template_version=None)
    event["campaign"] = None
    event.update(changes)
    return InputRecord(Topic.CATALOG_EVENTS, partition, offset, key, event, b"", [], 0)


@pytest.fixture
async def stage() -> IntakeStage:
    s = IntakeStage(StageContext(load_settings(), "intake"), LAYOUT)
    await s.start()
    return s


def only_rekey(outcome: Outcome) -> tuple[Any, Any]:
    (output,) = outcome.outputs
    (event,) = outcome.events
    assert event.state == "rekeyed"
    return output, event


@pytest.mark.parametrize(
    ("key", "reason"),
    [(None, "key_not_slot"), (b"upstream-id-42", "key_not_slot"), (SKU.encode(), "partition_not_slot")],
)
async def test_an_event_outside_its_slot_partition_is_republished_there_keyed_by_sku(
    stage: IntakeStage, key: bytes | None, reason: str
) -> None:
    output, event = only_rekey(await stage.handle(record(ELSEWHERE, key)))
    assert output.topic is Topic.CATALOG_EVENTS
    assert (output.key, output.partition) == (SKU, HOME)
    assert output.value["event_id"] == CATALOG_V1["event_id"]
    assert event.reason == reason
    assert event.attributes["from_partition"] == str(ELSEWHERE)
    assert event.attributes["to_partition"] == str(HOME)
    assert len(stage.seen) == 0, "nothing is remembered outside the slot partition"


async def test_in_its_slot_partition_any_key_is_decided_there(stage: IntakeStage) -> None:
    outcome = await stage.handle(record(HOME, None))
    assert [o.topic for o in outcome.outputs].count(Topic.JOBS_ACCEPTED) == 1
    assert {o.partition for o in outcome.outputs if o.topic is Topic.INTAKE_SEEN} == {HOME}


async def test_the_republished_copy_and_a_second_null_keyed_copy_make_one_job(stage: IntakeStage) -> None:
    # Two upstream copies of one request (other event ids) land in two partitions.
    first = await stage.handle(record(ELSEWHERE, None, 1, event_id="copy-a"))
    second = await stage.handle(record(HOME, None, 1, event_id="copy-b"))
    (moved,) = first.outputs
    arrived = await stage.handle(
        InputRecord(Topic.CATALOG_EVENTS, HOME, 2, moved.key.encode(), moved.value, b"", [], 0)
    )
    made = [o for o in (*second.outputs, *arrived.outputs) if o.topic is Topic.JOBS_ACCEPTED]
    assert len(made) == 1
    assert [e.state for e in arrived.events] == ["duplicate_job"]


async def test_an_invalid_event_is_rejected_where_it_is_not_moved(stage: IntakeStage) -> None:
    bad = record(ELSEWHERE, None)
    bad.value["product"]["title"] = ""
    outcome = await stage.handle(bad)
    assert outcome.outputs == []
    assert [e.state for e in outcome.events] == ["rejected_event"]


def test_slot_partitions_spread_and_are_stable() -> None:
    spread = {slot_partition(f"SKU-{i}", 12) for i in range(500)}
    assert spread == set(range(12))
    assert slot_partition("SKU-1", 3) == slot_partition("SKU-1", 3)
    with pytest.raises(ValueError):
        slot_partition("SKU-1", 0)
