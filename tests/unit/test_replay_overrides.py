"""Replay overrides, the --where statement, and what changed between two jobs."""

from __future__ import annotations

import pytest

from gateway.cli.main import main
from gateway.ops.compare import changed_names, changes, parameters
from gateway.ops.replay import BACKENDS, OverrideError, parse_overrides, rewrite_for_replay, where_query
from gpu_workers.registry import BACKENDS as REGISTRY_BACKENDS
from processors.config import Settings
from tests.fixtures.avro_samples import JOB_V1

ROUTE = {
    "rule_id": "default",
    "rules_version": "1",
    "backend": "compositor",
    "model": "compositor",
    "pool": "cpu",
    "fallbacks": [],
    "params": {"steps": "1"},
    "canary": False,
}


def test_the_backend_names_are_the_registry_s() -> None:
    assert BACKENDS == REGISTRY_BACKENDS


def test_overrides_rewrite_the_route_and_leave_the_original() -> None:
    job = {**JOB_V1, "route": dict(ROUTE)}
    overrides = parse_overrides(["model=sd-turbo", "backend=diffusers", "seed=42"], "generate")
    replayed = rewrite_for_replay(job, None, None, 5, overrides)
    route = replayed["route"]
    assert (route["model"], route["backend"], route["params"]) == (
        "sd-turbo",
        "diffusers",
        {"steps": "1", "seed": "42"},
    )
    assert route["rule_id"] == "replay-override:default" and job["route"] == ROUTE
    assert replayed["replay_of"] == JOB_V1["job_id"]
    assert {c["name"] for c in changes(parameters(job), parameters(replayed))} >= {
        "model",
        "backend",
        "seed",
        "rule",
    }


@pytest.mark.parametrize(
    ("pairs", "stage", "message"),
    [
        (["colour=red"], "generate", "unknown key"),
        (["seed"], "generate", "expected key=value"),
        (["seed=-1"], "generate", None),
        (["model=x"], "quality", "means nothing when replaying from quality"),
        (["template_version=1.0.0"], "generate", "replay from references or prompt"),
        (["model=" + "m" * 300], "generate", "--set model"),
    ],
)
def test_bad_overrides_are_refused_clearly(pairs: list[str], stage: str, message: str | None) -> None:
    job = {**JOB_V1, "route": dict(ROUTE)}
    with pytest.raises(OverrideError, match=message or "seed"):
        rewrite_for_replay(job, None, None, 1, parse_overrides(pairs, stage))


def test_bad_backend_and_template_version_are_refused_on_the_job() -> None:
    with pytest.raises(OverrideError, match="not one of"):
        rewrite_for_replay({**JOB_V1, "route": dict(ROUTE)}, None, None, 1, {"backend": "gpu9000"})
    with pytest.raises(OverrideError, match=r"has no version '9\.9\.9'"):
        rewrite_for_replay(dict(JOB_V1), None, None, 1, {"template_version": "9.9.9"})


def test_where_is_one_bounded_condition() -> None:
    sql = where_query(Settings(), "state = 'failed'", 10)
    assert sql.startswith("SELECT DISTINCT job_id FROM lightbox.pipeline_events WHERE (state = 'failed')")
    assert sql.endswith("LIMIT 10")
    for bad in ("1; DROP TABLE x", "  "):
        with pytest.raises(OverrideError):
            where_query(Settings(), bad)
    with pytest.raises(OverrideError, match="--limit"):
        where_query(Settings(), "1", 10**6)


def test_cli_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", "--stage", "generate", "--set", "colour=red", "--job", "j"]) == 2
    assert "unknown key" in capsys.readouterr().err
    assert main(["replay", "--stage", "generate"]) == 2
    assert main(["replay", "--job", "j", "--where", "1"]) == 2
    assert main(["replay", "--where", "1; select 2"]) == 2
    assert "no ';'" in capsys.readouterr().err


def test_what_changed_counts_a_seed_as_text_or_number_once() -> None:
    assert changed_names({"seed": "7", "model": "a"}, {"seed": 7, "model": "b", "x": None}) == {"model"}


def _failed_job_events() -> list[dict[str, object]]:
    return [
        {"stage": "intake", "state": "pending", "attempt": 0, "attributes": {"sku": "s1"}},
        {"stage": "prompt", "state": "running", "attempt": 0,
         "attributes": {"template": "hero@v3", "model": "sdxl", "backend": "diffusers"}},
        {"stage": "generate", "state": "running", "attempt": 0,
         "attributes": {"model": "hosted", "backend": "remote", "fell_back_from": "diffusers"}},
        {"stage": "quality", "state": "retry", "attempt": 0, "reason": "blank_output",
         "attributes": {"score.preservation": "0.41", "variants": "2"}},
        {"stage": "generate", "state": "running", "attempt": 1,
         "attributes": {"model": "hosted", "backend": "remote"}},
        {"stage": "quality", "state": "failed", "attempt": 1, "reason": "quality_rejection",
         "detail": "preservation 0.38 < 0.6", "attributes": {"score.preservation": "0.38", "variants": "2"}},
    ]  # fmt: skip


def test_a_job_that_never_published_compares_by_its_events() -> None:
    from gateway.ops.compare import comparison, side

    failed = side("job-f", "failed", None, _failed_job_events(), [])
    params = failed["parameters"]
    assert (params["model"], params["backend"], params["routed_model"]) == ("hosted", "remote", "sdxl")
    assert (params["template"], params["attempt"], params["fell_back_from"]) == ("hero@v3", 1, None)
    outcome = failed["outcome"]
    assert (outcome["stage"], outcome["state"]) == ("quality", "failed")
    assert outcome["reason"] == "quality_rejection"
    assert outcome["detail"] == "preservation 0.38 < 0.6"
    assert [(v["attempt"], v["state"], v["scores"]["preservation"]) for v in outcome["verdicts"]] == [
        (0, "retry", 0.41),
        (1, "failed", 0.38),
    ]
    replayed = [
        *_failed_job_events()[:3],
        {"stage": "quality", "state": "completed", "attempt": 0, "attributes": {"score.preservation": "0.9"}},
        {"stage": "publish", "state": "published", "attempt": 0, "attributes": {}},
    ]
    other = side("job-g", "published", None, replayed, [])
    changed = {c["name"]: (c["a"], c["b"]) for c in comparison(failed, other)["changed"]}
    assert changed["outcome.reason"] == ("quality_rejection", None)
    assert changed["outcome.state"] == ("failed", "published")
    assert changed["score.preservation"] == (0.38, 0.9)
    assert changed["outcome.attempts"] == (2, 1)
