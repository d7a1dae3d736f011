"""Intake after a crash between writing its de-duplication entry and its jobs: the redelivered
message must redo the fan-out, while the same event arriving as a new message is a duplicate."""

from __future__ import annotations

import copy

from processors.config import load_settings
from processors.runtime.records import InputRecord
from processors.runtime.stage import StageContext
from processors.stages.intake import IntakeStage
from processors.state.layout import ChangelogLayout
from schemas.topics import Topic
from tests.fixtures.avro_samples import CATALOG_V1

# Every event is in its slot partition: no re-keying in these tests.
ONE_PARTITION = ChangelogLayout("catalog.events", "intake.seen", 1)


def _record(offset: int) -> InputRecord:
    event = copy.deepcopy(CATALOG_V1)
    event["request"]["variants"] = 1
    event["request"]["template_version"] = None
    event["campaign"] = None
    return InputRecord(Topic.CATALOG_EVENTS, 0, offset, b"SKU-1", event, b"", [], 0)


async def test_redelivered_message_redoes_its_fan_out_but_a_new_copy_is_a_duplicate() -> None:
    stage = IntakeStage(StageContext(load_settings(), "intake"), ONE_PARTITION)
    await stage.start()

    first = await stage.handle(_record(5))
    jobs = [o.value["job_id"] for o in first.outputs if o.topic is Topic.JOBS_ACCEPTED]
    assert len(jobs) == 1
    seen = [o.value for o in first.outputs if o.topic is Topic.INTAKE_SEEN]
    assert {(s["source_partition"], s["source_offset"]) for s in seen} == {(0, 5)}

    # The process died after intake.seen was written but before jobs.accepted: same message again.
    again = await stage.handle(_record(5))
    assert [o.value["job_id"] for o in again.outputs if o.topic is Topic.JOBS_ACCEPTED] == jobs

    # The same event resubmitted later is a new message: recorded as a duplicate, no new job.
    resent = await stage.handle(_record(9))
    assert not [o for o in resent.outputs if o.topic is Topic.JOBS_ACCEPTED]
    assert [e.state for e in resent.events] == ["duplicate_event"]
