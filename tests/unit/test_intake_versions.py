"""Product updates and ordering, decided by the shipped intake stage in its slot partition:
a changed product makes a new version (new job id, lineage to the one it supersedes), an
identical one is a duplicate, an older event is a stale_event, a reused event id with other
content a conflicting_duplicate. tests/integration/test_intake_dedup.py runs the same through
Kafka with intake processes."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from processors.config import load_settings
from processors.runtime.records import InputRecord, Outcome
from processors.runtime.stage import StageContext
from processors.stages.intake import IntakeStage
from processors.state.entry import SeenEntry
from processors.state.layout import ChangelogLayout
from schemas.serde import AvroSerde
from schemas.topics import Topic
from tests.fixtures.avro_samples import CATALOG_V1

ONE_PARTITION = ChangelogLayout("catalog.events", "intake.seen", 1)
T0 = 1_700_000_000_000


def event(event_id: str, occurred_at: int = T0, **product: Any) -> dict[str, Any]:
    e = copy.deepcopy(CATALOG_V1)
    e.update(event_id=event_id, occurred_at=occurred_at, event_type="PRODUCT_UPSERT", campaign=None)
    e["request"].update(variants=1, template_version=None)
    e["product"].update(product)
    return e


class Intake:
    """The stage fed one message after another on partition 0, as its consumer would."""

    def __init__(self) -> None:
        self.stage = IntakeStage(StageContext(load_settings(), "intake"), ONE_PARTITION)
        self.offset = 0

    async def start(self) -> Intake:
        await self.stage.start()
        return self

    async def send(self, value: dict[str, Any], offset: int | None = None) -> Outcome:
        if offset is None:
            self.offset += 1
            offset = self.offset
        record = InputRecord(Topic.CATALOG_EVENTS, 0, offset, b"SKU-1", copy.deepcopy(value), b"", [], 0)
        return await self.stage.handle(record)


def jobs(outcome: Outcome) -> list[dict[str, Any]]:
    return [o.value for o in outcome.outputs if o.topic is Topic.JOBS_ACCEPTED]


def states(outcome: Outcome) -> list[tuple[str, str]]:
    return [(e.state, e.reason) for e in outcome.events]


@pytest.fixture
async def intake() -> Intake:
    return await Intake().start()


async def test_a_changed_product_is_a_new_version_that_supersedes_the_old(intake: Intake) -> None:
    (v1,) = jobs(await intake.send(event("e1")))
    assert v1["supersedes"] is None and v1["asset_version"] == T0

    changed = await intake.send(event("e2", T0 + 1000, title="Mug, blue"))
    (v2,) = jobs(changed)
    assert v2["job_id"] != v1["job_id"]
    assert v2["idempotency_key"] == v1["idempotency_key"], "the same slot"
    assert v2["supersedes"] == v1["job_id"]
    assert v2["asset_version"] == T0 + 1000 > v1["asset_version"]
    assert v2["product_sha256"] != v1["product_sha256"]
    (pending,) = changed.events
    assert pending.state == "pending" and pending.job_id == v2["job_id"]
    assert pending.attributes["supersedes"] == v1["job_id"]
    assert pending.attributes["asset_version"] == str(T0 + 1000)
    assert pending.attributes["slot"] == v1["idempotency_key"]

    (v3,) = jobs(await intake.send(event("e3", T0 + 2000, title="Mug, blue", attributes={"color": "blue"})))
    assert v3["supersedes"] == v2["job_id"]


async def test_going_back_to_earlier_content_is_a_newer_version_with_its_own_job(intake: Intake) -> None:
    (a,) = jobs(await intake.send(event("e1")))
    (b,) = jobs(await intake.send(event("e2", T0 + 1, title="Other")))
    (a_again,) = jobs(await intake.send(event("e3", T0 + 2)))
    assert a_again["product_sha256"] == a["product_sha256"]
    assert a_again["job_id"] not in (a["job_id"], b["job_id"])
    assert a_again["supersedes"] == b["job_id"] and a_again["asset_version"] > b["asset_version"]


@pytest.mark.parametrize(
    "change",
    [
        {"title": "Mug!"},
        {"brand": "Other"},
        {"category": "garden"},
        {"attributes": {"color": "blue"}},
        {"references": [{"url": "https://img.example/mug-v2.png", "role": "PRODUCT", "required": True}]},
        {"references": [{"url": "https://img.example/mug.png", "role": "PRODUCT", "required": True}] * 2},
    ],
)
async def test_each_kind_of_product_change_makes_a_version(intake: Intake, change: dict[str, Any]) -> None:
    (v1,) = jobs(await intake.send(event("e1")))
    later = event("e2", T0 + 5)
    if "references" in change:
        later["references"] = change["references"]
    else:
        later["product"].update(change)
    (v2,) = jobs(await intake.send(later))
    assert v2["supersedes"] == v1["job_id"]


async def test_an_identical_product_is_a_duplicate_of_the_job_that_stands(intake: Intake) -> None:
    (v1,) = jobs(await intake.send(event("e1")))
    for i, occurred in enumerate([T0, T0 + 10]):  # the same time, and later: the same content
        again = await intake.send(event(f"dup-{i}", occurred))
        assert jobs(again) == []
        assert states(again) == [("duplicate_job", "duplicate_idempotency_key")]
        assert again.events[0].job_id == v1["job_id"]
    # A request option outside the slot and the product (priority) is not a new version either.
    other = event("e-priority", T0 + 20)
    other["request"]["priority"] = 7
    assert jobs(await intake.send(other)) == []


async def test_an_older_event_is_stale_even_if_newer_one_was_a_duplicate(intake: Intake) -> None:
    await intake.send(event("e1", T0 + 100))
    stale = await intake.send(event("e0", T0, title="An older title"))
    assert stale.outputs == [], "no job and no table entry"
    (rejection,) = stale.events
    assert (rejection.state, rejection.reason) == ("rejected_event", "stale_event")
    assert rejection.attributes["field"] == "occurred_at"
    assert rejection.attributes["newer_event_id"] == "e1"
    assert str(T0 + 100) in rejection.detail

    # e2 repeats e1's content at a later time; e1.5 (between them, other content) is stale too.
    await intake.send(event("e2", T0 + 300))
    assert states(await intake.send(event("e1.5", T0 + 200, title="In between"))) == [
        ("rejected_event", "stale_event")
    ]


async def test_other_content_at_the_same_time_is_stale_not_a_second_version(intake: Intake) -> None:
    await intake.send(event("e1"))
    assert states(await intake.send(event("e2", T0, title="Same millisecond"))) == [
        ("rejected_event", "stale_event")
    ]


async def test_an_event_stale_for_one_of_its_slots_is_refused_whole(intake: Intake) -> None:
    web = event("web-new", T0 + 100)
    await intake.send(web)
    both = event("both-old", T0, title="Old")
    both["request"]["channels"] = ["app", "web"]  # app is new, web already has something newer
    outcome = await intake.send(both)
    assert outcome.outputs == [] and states(outcome) == [("rejected_event", "stale_event")]
    assert outcome.events[0].attributes["slot"].split("|")[3] == "web"


async def test_a_reused_event_id_with_other_content_is_a_conflicting_duplicate(intake: Intake) -> None:
    (v1,) = jobs(await intake.send(event("e1")))
    same = await intake.send(event("e1"))
    assert states(same) == [("duplicate_event", "duplicate_event_id")]
    assert same.events[0].attributes["job_ids"] == v1["job_id"]

    for changed in (event("e1", title="Different"), event("e1", T0 + 1)):
        outcome = await intake.send(changed)
        assert outcome.outputs == []
        assert states(outcome) == [("rejected_event", "conflicting_duplicate")]
        assert outcome.events[0].attributes["field"] == "event_id"


async def test_a_redelivered_update_redoes_the_same_version_with_the_same_lineage(intake: Intake) -> None:
    (v1,) = jobs(await intake.send(event("e1")))
    update = event("e2", T0 + 1, title="New")
    (v2,) = jobs(await intake.send(update, offset=50))
    # Crash after intake.seen was written, before jobs.accepted: the same message again.
    (again,) = jobs(await intake.send(update, offset=50))
    assert again["job_id"] == v2["job_id"] and again["supersedes"] == v1["job_id"]


async def test_a_slot_from_a_changelog_before_versions_is_taken_over(intake: Intake) -> None:
    # seen_event v2 wrote one entry per job id, derived from the slot key alone.
    from processors.intake import fan_out, job_id_for

    (probe,) = fan_out(event("e1"), 0, intake.stage.templates.resolve_version)
    legacy_id = job_id_for(probe["idempotency_key"])
    intake.stage.seen.put(
        f"job:{legacy_id}", SeenEntry(0, (legacy_id,), "old-event", T0, intake.stage.seen.now_ms())
    )

    same = await intake.send(event("e1"))
    assert jobs(same) == [] and same.events[0].job_id == legacy_id, "what it made stands"
    (v2,) = jobs(await intake.send(event("e2", T0 + 1, title="Changed")))
    assert v2["supersedes"] == legacy_id


async def test_every_entry_written_fits_the_seen_event_schema(intake: Intake) -> None:
    serde = AvroSerde("seen_event")
    outcome = await intake.send(event("e1"))
    written = [o for o in outcome.outputs if o.topic is Topic.INTAKE_SEEN]
    assert sorted(o.key.split(":", 1)[0] for o in written) == ["event", "slot"]
    for output in written:
        assert output.partition == 0
        decoded = serde.decode(serde.encode(output.value))
        assert decoded["key"] == output.key and decoded["digest"]
