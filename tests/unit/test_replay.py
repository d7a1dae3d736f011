from __future__ import annotations

import pytest

from gateway.ops.replay import ReplayError, replay_source, rewrite_for_replay
from schemas.topics import Topic
from tests.fixtures.avro_samples import JOB_V1


def test_replay_is_a_new_job_that_names_the_original() -> None:
    replayed = rewrite_for_replay(dict(JOB_V1), None, None, 123)
    assert replayed["replay_of"] == "job-1"
    assert replayed["job_id"] != "job-1"
    assert replayed["submitted_at"] == 123
    assert rewrite_for_replay(dict(JOB_V1), None, None, 123)["job_id"] == replayed["job_id"]


def test_replay_with_another_model_overrides_the_route_and_says_so() -> None:
    job = {
        **JOB_V1,
        "route": {
            "rule_id": "default",
            "rules_version": "1",
            "backend": "diffusers",
            "model": "sd15",
            "pool": "gpu",
            "fallbacks": [],
            "params": {},
            "canary": False,
        },
    }
    replayed = rewrite_for_replay(job, "sdxl", None, 1)
    assert replayed["route"]["model"] == "sdxl" and replayed["route"]["backend"] == "diffusers"
    assert replayed["route"]["rule_id"] == "replay-override:default"
    assert job["route"]["model"] == "sd15"


def test_model_override_needs_a_routed_job() -> None:
    with pytest.raises(ReplayError):
        rewrite_for_replay(dict(JOB_V1), "sdxl", None, 1)


def _event(stage: str, state: str, source: str) -> dict:
    return {"stage": stage, "state": state, "attributes": {"source": source} if source else {}}


def test_replay_from_publish_re_reads_the_ready_asset_not_the_decision() -> None:
    # A held job: publish read it from assets.ready, then acted on a reviewer's decision read
    # from review.decisions. Only the first is a job record; the topology says which input it is.
    timeline = {
        "job_id": "job-1",
        "events": [
            _event("generate", "running", "generation.requests/0/7"),
            _event("publish", "in_review", "assets.ready/2/41"),
            _event("publish", "approved", "review.decisions/1/3"),
            _event("publish", "published", "review.decisions/1/3"),
        ],
    }
    assert replay_source(timeline, "publish") == (Topic.ASSETS_READY, 2, 41)
    assert replay_source(timeline, "generate") == (Topic.GENERATION_REQUESTS, 0, 7)


def test_replay_source_takes_the_latest_read_of_the_stage() -> None:
    timeline = {
        "job_id": "job-1",
        "events": [
            _event("quality", "retry", "generation.results/0/5"),
            _event("quality", "completed", "generation.results/0/9"),
            _event("quality", "completed", ""),  # no source recorded: skipped
        ],
    }
    assert replay_source(timeline, "quality") == (Topic.GENERATION_RESULTS, 0, 9)


@pytest.mark.parametrize(
    ("stage", "message"),
    [
        ("postprocess", "never reached stage postprocess"),
        ("intake", "does not read jobs"),
        ("nope", "unknown stage"),
    ],
)
def test_replay_source_explains_what_cannot_be_replayed(stage: str, message: str) -> None:
    timeline = {"job_id": "job-1", "events": [_event("quality", "completed", "generation.results/0/9")]}
    with pytest.raises(ReplayError, match=message):
        replay_source(timeline, stage)
