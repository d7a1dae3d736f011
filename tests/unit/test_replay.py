from __future__ import annotations

import pytest

from gateway.ops.replay import ReplayError, rewrite_for_replay
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
