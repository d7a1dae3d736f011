"""The shipped prompt stage records the rendered prompt's own lineage record: the variables left
out to fit the text encoder's token limit are named on the job, with the template's scene."""

from __future__ import annotations

import copy

from processors.config import load_settings
from processors.prompting import TemplateStore, variables_for_job
from processors.runtime.records import InputRecord
from processors.runtime.stage import StageContext
from processors.stages.prompt import PromptStage
from schemas.topics import Topic
from tests.fixtures.avro_samples import JOB_V1


def _job_too_long_for_every_variable() -> dict:
    job = copy.deepcopy(JOB_V1)
    # Seven long words fill most of the 77 tokens, so the short attributes no longer fit.
    job["product"] = {
        **job["product"],
        "title": " ".join(["Extraordinarily"] * 7),
        "attributes": {"colour": "brushed steel", "material": "stainless steel"},
    }
    job["spec"]["template_version"] = "1.1.0"
    return job


async def test_the_job_records_the_rendered_prompt_with_its_dropped_variables() -> None:
    job = _job_too_long_for_every_variable()
    expected = TemplateStore().render("studio-hero", variables_for_job(job), "1.1.0")
    assert expected.dropped, "the sample must need dropping, or this test proves nothing"

    stage = PromptStage(StageContext(load_settings(), "prompt"))
    await stage.start()
    outcome = await stage.handle(InputRecord(Topic.JOBS_REFERENCED, 0, 0, b"job-1", job, b"", [], 0))

    (output,) = outcome.outputs
    assert output.topic is Topic.GENERATION_REQUESTS
    prompt = output.value["prompt"]
    assert prompt == expected.to_record()
    assert prompt["variables"]["dropped_variables"] == ",".join(expected.dropped)
    assert prompt["variables"]["scene"] == "studio"
    assert output.value["route"]["params"]["scene"] == "studio"
