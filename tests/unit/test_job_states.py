"""processors/job_states.py is the one list of states: every state the code records is in it,
every state in it is recorded somewhere, and the lifecycle is the design card's."""

from __future__ import annotations

import ast
from pathlib import Path

from processors.job_states import (
    LIFECYCLE,
    MARKERS,
    TERMINAL,
    UNKNOWN,
    JobState,
    current_state,
    is_terminal,
)

ROOT = Path(__file__).resolve().parents[2]
# Where events are made, and the position of the state argument in each maker.
STATE_ARGUMENT = {"Event": 1, "job_event": 1, "forward": 2}


def _emitted_states() -> dict[str, list[str]]:
    """Each state given to Event(...), job_event(...) or Outcome.forward(...) in the pipeline's
    code, literal or JobState member, with where it was given."""
    found: dict[str, list[str]] = {}
    for path in [*(ROOT / "processors").rglob("*.py"), *(ROOT / "gpu_workers").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = (
                func.id
                if isinstance(func, ast.Name)
                else func.attr
                if isinstance(func, ast.Attribute)
                else ""
            )
            if name not in STATE_ARGUMENT:
                continue
            given = [kw.value for kw in node.keywords if kw.arg == "state"]
            if len(node.args) > STATE_ARGUMENT[name]:
                given.append(node.args[STATE_ARGUMENT[name]])
            for value in given:
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    state = value.value
                elif isinstance(value, ast.Attribute) and getattr(value.value, "id", "") == "JobState":
                    state = JobState[value.attr].value
                else:
                    continue  # a variable: its values are literals elsewhere
                found.setdefault(state, []).append(f"{path.relative_to(ROOT)}:{node.lineno}")
    # Outcome.fail records "failed" itself.
    found.setdefault(JobState.FAILED.value, []).append("processors/runtime/records.py (Outcome.fail)")
    return found


def test_every_state_the_code_records_is_a_job_state() -> None:
    emitted = _emitted_states()
    unknown = {state: where for state, where in emitted.items() if state not in set(JobState)}
    assert not unknown, f"states recorded but missing from processors/job_states.py: {unknown}"


def test_every_job_state_is_recorded_somewhere() -> None:
    emitted = _emitted_states()
    assert len(emitted) > 10, "the scan found the event makers"
    assert {state.value for state in JobState} - set(emitted) == set()


def test_the_lifecycle_is_the_design_cards() -> None:
    design = {"pending", "running", "failed", "completed", "in_review", "approved", "rejected", "published"}
    assert set(LIFECYCLE) == design
    assert frozenset(JobState) - design == MARKERS
    assert set(LIFECYCLE) >= TERMINAL


def test_current_state_is_the_last_lifecycle_state_markers_aside() -> None:
    assert current_state(["pending", "running", "retry", "dead_lettered"]) == "running"
    assert current_state(["pending", "in_review", "decision_ignored"]) == "in_review"
    assert current_state(["rejected_event"]) == "rejected_event"  # an event intake refused
    assert current_state([]) == UNKNOWN
    # Redone work after publication (seen in the chaos suite) does not move a job back.
    assert current_state(["running", "published", "completed", "duplicate_job"]) == "published"


def test_a_job_waiting_on_a_person_is_terminal_for_the_pipeline() -> None:
    assert is_terminal("in_review") and is_terminal(JobState.PUBLISHED)
    assert not is_terminal("approved") and not is_terminal("retry") and not is_terminal(None)
