"""The shipped intake stage answers a bad template reference with a recorded rejection, whether
the request names a template that does not exist or pins a version of it that does not exist:
both are the submitter's mistake, never poison for the dead-letter topic."""

from __future__ import annotations

import copy
from typing import Any

from processors.config import load_settings
from processors.prompting import TemplateStore
from processors.runtime.records import InputRecord, Outcome
from processors.runtime.stage import StageContext
from processors.stages.intake import IntakeStage
from processors.state.layout import ChangelogLayout
from schemas.topics import Topic
from tests.fixtures.avro_samples import CATALOG_V1

# Every event is in its slot partition: no re-keying in these tests.
ONE_PARTITION = ChangelogLayout("catalog.events", "intake.seen", 1)


def _record(offset: int, **request: Any) -> InputRecord:
    event = copy.deepcopy(CATALOG_V1)
    event["event_id"] = f"evt-templates-{offset}"
    event["request"].update({"variants": 1, "template_version": None, **request})
    event["campaign"] = None
    return InputRecord(Topic.CATALOG_EVENTS, 0, offset, b"SKU-1", event, b"", [], 0)


async def _stage() -> IntakeStage:
    stage = IntakeStage(StageContext(load_settings(), "intake"), ONE_PARTITION)
    await stage.start()
    return stage


def _only_rejection(outcome: Outcome) -> Any:
    assert outcome.outputs == [], "a rejected event writes no job and no de-duplication entry"
    (event,) = outcome.events
    assert event.state == "rejected_event"
    return event


async def test_an_unknown_pinned_version_is_rejected_with_the_versions_that_exist() -> None:
    stage = await _stage()
    known = TemplateStore().versions("studio-hero")
    assert "9.9.9" not in known

    rejection = _only_rejection(await stage.handle(_record(1, template_version="9.9.9")))

    assert rejection.reason == "unknown_template_version"
    assert rejection.attributes["field"] == "request.template_version"
    assert "9.9.9" in rejection.detail and all(v in rejection.detail for v in known)


async def test_an_unknown_template_name_is_rejected_the_same_way() -> None:
    stage = await _stage()
    rejection = _only_rejection(await stage.handle(_record(2, template_id="no-such-template")))
    assert rejection.reason == "unknown_template"
    assert rejection.attributes["field"] == "request.template_id"


async def test_an_existing_pinned_version_is_accepted_and_used() -> None:
    stage = await _stage()
    outcome = await stage.handle(_record(3, template_version="1.0.0"))
    jobs = [o.value for o in outcome.outputs if o.topic is Topic.JOBS_ACCEPTED]
    assert [j["spec"]["template_version"] for j in jobs] == ["1.0.0"]
