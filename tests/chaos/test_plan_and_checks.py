"""The chaos suite's own logic without a stack: the seeded plan and the checker's verdicts.

A checker that cannot fail proves nothing, so each check is shown failing on evidence built to
break it, as well as passing on evidence that holds.
"""

from __future__ import annotations

from collections import Counter

import pytest

from gateway.harness.chaos.checker import (
    Evidence,
    Letter,
    is_outage,
    run_checks,
    tally,
)
from gateway.harness.chaos.plan import CI, KILLS, LONG, MAJOR, Fault, job_shares, make_plan
from gateway.harness.chaos.supervision import Exit, SupervisionReport
from gateway.harness.chaos.topics import JobEvent, state_of

STAGES = ["intake", "references", "prompt", "generate", "quality", "postprocess", "publish"]


def plan(seed: int, rounds: int = 3, jobs: int = 12, profile=CI):  # type: ignore[no-untyped-def]
    return make_plan(seed, rounds, jobs, STAGES, "eventlog", 2, profile)


def faults(rounds) -> Counter[Fault]:  # type: ignore[no-untyped-def]
    return Counter(action.fault for r in rounds for action in r.actions)


# -- the plan ---------------------------------------------------------------------------------


def test_a_seed_names_one_plan_and_another_seed_another() -> None:
    assert plan(7) == plan(7)
    assert plan(7) != plan(8)


@pytest.mark.parametrize("seed", range(20))
def test_the_ci_plan_meets_every_fault_and_kills_the_broker_once_briefly(seed: int) -> None:
    rounds = plan(seed)
    counts = faults(rounds)
    assert all(counts[f] >= 1 for f in MAJOR), counts
    assert counts[Fault.KILL_STAGE] >= len(rounds)
    assert counts[Fault.KILL_BROKER] == 1
    broker = [a for r in rounds for a in r.actions if a.fault is Fault.KILL_BROKER]
    assert broker[0].duration_s <= 2.0


def test_the_long_plan_draws_broker_kills_beyond_one() -> None:
    counts = faults(plan(3, rounds=100, jobs=200, profile=LONG))
    assert counts[Fault.KILL_BROKER] > 1
    assert sum(counts[f] for f in MAJOR) >= 100


def test_kills_name_real_stages_and_replicas_outages_a_duration() -> None:
    for action in (a for r in plan(5, rounds=30, profile=LONG) for a in r.actions):
        if action.fault is Fault.KILL_STAGE:
            assert action.stage in STAGES and action.replica in (0, 1)
        elif action.fault is Fault.KILL_SINK:
            assert action.stage == "eventlog"
        else:
            assert action.fault not in KILLS and action.duration_s > 0


def test_jobs_are_spread_over_the_rounds() -> None:
    assert job_shares(12, 3) == [4, 4, 4]
    assert job_shares(5, 3) == [2, 2, 1]
    assert sum(r.jobs for r in plan(1, rounds=7, jobs=20)) == 20


def test_a_plan_needs_a_round_and_a_job() -> None:
    with pytest.raises(ValueError):
        plan(1, rounds=0)
    with pytest.raises(ValueError):
        plan(1, jobs=0)


# -- the checker ------------------------------------------------------------------------------


def events(job: str, *states: str) -> list[JobEvent]:
    return [JobEvent(f"{job}-{i}", job, "stage", state, 1000 + i, "") for i, state in enumerate(states)]


def healthy(**changes: object) -> Evidence:
    files = {"a": {"published/S/a/web-800.jpg", "published/S/a/lineage.json"}}
    evidence = Evidence(
        job_ids=["a", "b"],
        events={"a": events("a", "pending", "running", "approved", "published"), "b": events("b", "failed")},
        event_log_states={"a": "published", "b": "failed"},
        event_log_ids={"a-0", "a-1", "a-2", "a-3", "b-0"},
        published_records=Counter({"a": 1}),
        published_keys={"a": set(files["a"])},
        asset_files=files,
        letters=[],
        supervision=SupervisionReport({"intake#0": 2}, {}, [], [], [], 2),
    )
    for name, value in changes.items():
        setattr(evidence, name, value)
    return evidence


def failing(evidence: Evidence) -> dict[str, list[str]]:
    return {check.name: check.problems for check in run_checks(evidence) if not check.ok}


def test_evidence_that_holds_passes_every_check() -> None:
    assert failing(healthy()) == {}
    assert tally(healthy()) == tally(healthy())
    assert tally(healthy()).lost == tally(healthy()).duplicated == 0


def test_a_job_still_running_is_lost() -> None:
    evidence = healthy(events={**healthy().events, "b": events("b", "pending", "running")})
    problems = failing(evidence)
    assert "terminal" in problems and "b: not finished" in problems["terminal"][0]
    assert tally(evidence).lost == 1


def test_a_job_both_failed_and_published_has_two_ends() -> None:
    evidence = healthy(events={**healthy().events, "a": events("a", "failed", "published")})
    assert "more than one end" in failing(evidence)["terminal"][0]


def test_a_second_published_record_is_a_duplicate_even_with_the_same_files() -> None:
    evidence = healthy(published_records=Counter({"a": 2}))
    assert "2 records on assets.published" in failing(evidence)["published_once"][0]
    assert tally(evidence).duplicated == 1


def test_files_beyond_the_record_and_files_without_a_record_are_caught() -> None:
    extra = {"a": {*healthy().asset_files["a"], "published/S/a/web-800-copy.jpg"}}
    assert "extra" in failing(healthy(asset_files=extra))["assets"][0]
    orphan = {**healthy().asset_files, "b": {"published/S/b/lineage.json"}}
    assert "without a published record" in failing(healthy(asset_files=orphan))["assets"][0]


def test_an_event_the_sink_lost_or_a_state_it_disagrees_on_is_caught() -> None:
    assert "not in the event log" in failing(healthy(event_log_ids={"a-0"}))["event_log"][0]
    states = {"a": "running", "b": "failed"}
    assert "the event log says 'running'" in failing(healthy(event_log_states=states))["event_log"][0]


def test_a_stage_given_up_on_crashed_or_down_fails_the_supervisor_check() -> None:
    crash = Exit("publish", 1, 4242, 1, "Traceback ...\nKafkaException: MSG_SIZE_TOO_LARGE")
    report = SupervisionReport(
        {"publish#1": 3}, {"publish#1": 3}, [crash], ["stage publish failed"], ["publish#1"], 0
    )
    problems = failing(healthy(supervision=report))["supervisor"]
    assert any("gave up" in p for p in problems)
    assert any("not running" in p for p in problems)
    assert any("exited on its own with 1: KafkaException: MSG_SIZE_TOO_LARGE" in p for p in problems)
    assert any("2 restart(s) not caused by the plan" in p for p in problems)


def _letter(error_class: str, fault: str, kind: str) -> Letter:
    return Letter("a", "generate", error_class, "boom", "x.generation.requests/0/3", fault, kind)


def test_dead_letters_are_judged_by_their_fault_and_kind_headers_not_their_class() -> None:
    # A dependency error dead-lettered (it kept failing while its batch succeeded) is an outage,
    # whatever its class is called; fault=record is the record's own fault even when the class
    # name reads like an outage.
    outage = _letter("StorageUnavailable", "record", "dependency")
    own = _letter("ConnectionishValueError", "record", "record")
    unplaced = _letter("RuntimeError", "unknown", "unknown")
    assert is_outage(outage) and not is_outage(own) and not is_outage(unplaced)

    problems = failing(healthy(letters=[outage, own, unplaced]))["dead_letters"]
    assert "for an outage (fault=record, kind=dependency): StorageUnavailable" in problems[0]
    assert "for the record's own fault (fault=record, kind=record)" in problems[1]
    assert "for an error that could not be placed" in problems[2]
    assert tally(healthy(letters=[outage, own, unplaced])).outage_letters == 1


def test_a_letter_without_the_headers_is_still_a_lost_job() -> None:
    problems = failing(healthy(letters=[_letter("MaxRetryError", "", "")]))["dead_letters"]
    assert "an unjudged failure (dlq.fault=missing)" in problems[0]
    assert tally(healthy(letters=[_letter("MaxRetryError", "", "")])).outage_letters == 0


def test_a_state_is_read_by_time_then_lifecycle_order() -> None:
    same_ms = [
        JobEvent("1", "a", "publish", "published", 5, ""),
        JobEvent("2", "a", "publish", "approved", 5, ""),
    ]
    assert state_of(same_ms) == "published"
    assert state_of([]) == "unknown"


def test_a_duplicate_is_traced_to_the_first_stage_that_saw_the_job_twice() -> None:
    def at(stage: str, source: str, state: str = "running") -> JobEvent:
        return JobEvent(f"{stage}{source}", "a", stage, state, 1, "", source)

    trail = [
        at("quality", "generation.results/0/4"),
        at("postprocess", "assets.scored/1/2"),
        at("postprocess", "assets.scored/1/3"),
        at("publish", "assets.ready/2/0", "published"),
        at("publish", "assets.ready/2/1", "published"),
    ]
    evidence = healthy(events={**healthy().events, "a": trail}, published_records=Counter({"a": 2}))
    problem = failing(evidence)["published_once"][0]
    assert "published from assets.ready/2/0, assets.ready/2/1" in problem
    assert "first seen twice by postprocess (assets.scored/1/2, assets.scored/1/3)" in problem
