"""The states a pipeline event records, the lifecycle among them, and which ones end the pipeline's work.

One home for these: the event-log queries (current state, jobs by state, the SQL that ranks
states), the demo, the benchmark and the test session's waits all read them from here.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class JobState(StrEnum):
    # The job's lifecycle (the design card's states).
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    IN_REVIEW = "in_review"
    APPROVED = "approved"
    REJECTED = "rejected"
    FAILED = "failed"
    PUBLISHED = "published"
    # Markers: events about a job (or an incoming event) that do not move it through the lifecycle.
    RETRY = "retry"
    DEAD_LETTERED = "dead_lettered"
    DROPPED_REFERENCE = "dropped_reference"
    DUPLICATE_EVENT = "duplicate_event"
    DUPLICATE_JOB = "duplicate_job"
    REJECTED_EVENT = "rejected_event"
    ALREADY_DECIDED = "already_decided"
    DECISION_IGNORED = "decision_ignored"
    NOTIFY_FAILED = "notify_failed"
    NOTIFIED = "notified"
    # A consumer resumed past retention: the range it could not read is recorded (runtime).
    OFFSET_RESET = "offset_reset"
    # An incoming catalogue event republished to its product slot's partition (intake).
    REKEYED = "rekeyed"
    # Credits (processors/credits/): intake reserved a job's cost; its terminal event consumed
    # (published) or released (failed, rejected, dead-lettered) the reservation.
    CREDIT_RESERVED = "credit_reserved"
    CREDIT_CONSUMED = "credit_consumed"
    CREDIT_RELEASED = "credit_released"


# Events about a job's credit account, not its work: they take no handler time of their own and
# are no verdict, failure or retry of the stage that sent them (processors/credits/).
LEDGER: frozenset[JobState] = frozenset(
    {JobState.CREDIT_RESERVED, JobState.CREDIT_CONSUMED, JobState.CREDIT_RELEASED}
)

# The lifecycle in the order a job moves through it. One handler may emit two states in the same
# millisecond (approved, then published): this rank breaks such ties.
LIFECYCLE: tuple[JobState, ...] = (
    JobState.PENDING,
    JobState.RUNNING,
    JobState.COMPLETED,
    JobState.IN_REVIEW,
    JobState.APPROVED,
    JobState.REJECTED,
    JobState.FAILED,
    JobState.PUBLISHED,
)

MARKERS: frozenset[JobState] = frozenset(JobState) - frozenset(LIFECYCLE)

# The pipeline has nothing more to do for a job in one of these. in_review is among them: what
# happens next waits on a person, so a caller waiting for the pipeline stops there.
TERMINAL: frozenset[JobState] = frozenset(
    {JobState.PUBLISHED, JobState.FAILED, JobState.REJECTED, JobState.IN_REVIEW}
)

# Once published, a job stays published: work redone after it (a redelivered batch upstream,
# its stages re-emitting completed) is de-duplicated downstream and must not move it back.
FINAL = JobState.PUBLISHED

UNKNOWN = "unknown"  # what a job with no events is in


def is_lifecycle(state: str) -> bool:
    return state in LIFECYCLE


def is_terminal(state: str | None) -> bool:
    return state in TERMINAL


def current_state(states: Iterable[str]) -> str:
    """A job's state from its events' states in time order: the last lifecycle state; a job that
    has only markers is in its last marker; one with no events is unknown."""
    seen = list(states)
    lifecycle = [state for state in seen if is_lifecycle(state)]
    if FINAL in lifecycle:
        return FINAL
    if lifecycle:
        return lifecycle[-1]
    return seen[-1] if seen else UNKNOWN
