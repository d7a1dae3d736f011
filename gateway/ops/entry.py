"""Bounds on everything that enters from outside through the CLI and the HTTP gateway, checked
where it enters, with an error that names the field and its limit.

One home per kind of limit, none written twice:
- review decisions: `review.max_reason_chars` / `max_reviewer_chars` (settings), checked here for
  `lightbox review` and the HTTP review route alike (and again in submit_decision, for any caller);
- catalog events: intake's own field limits (processors/intake/policy.yaml), through intake's
  validation (catalog_bounds), so the gateway refuses at entry exactly what intake would reject
  for size;
- the text checks themselves (length, control characters, unpaired surrogates) are intake's
  FieldChecker.check_text;
- identifiers typed or posted (a job id, a model name) and request sizes: the constants below.
A record that passed these fits in a Kafka message with room to spare, which is what keeps a
1 MB review reason from ever reaching the publish stage.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from processors.config import ReviewSettings
from processors.intake import IntakePolicy, validate_event
from processors.intake.fields import FieldChecker
from processors.intake.rejection import Rejection
from processors.prompting import TemplateStore

# Job ids are derived (a short hash and the slot); model and backend names are registry keys.
MAX_ID_CHARS = 256
# Events one POST /v1/events may carry (the body is bounded too: gateway/web/guards.py).
MAX_EVENTS_PER_REQUEST = 500
# One line of a `lightbox submit` file: a catalog event within intake's limits is far smaller.
MAX_LINE_CHARS = 1024 * 1024

# Intake's rejection reasons that are about size: refused at entry rather than carried to intake.
# The others (policy, unknown template, ...) are intake's to decide and record as events.
SIZE_REASONS = frozenset({"too_long", "too_many_attributes", "too_many_references", "too_many_jobs"})


@dataclass
class EntryError(ValueError):
    """A value from outside over its limit or malformed: refused before anything is sent."""

    field: str
    detail: str  # "1048576 characters, at most 2000 (review.max_reason_chars)"
    limit: int | None = None

    def __str__(self) -> str:
        return f"{self.field}: {self.detail}"


@functools.cache
def intake_policy() -> IntakePolicy:
    """policy.yaml, loaded once per process: what intake itself will check an event against."""
    return IntakePolicy.load()


@functools.cache
def template_store() -> TemplateStore:
    return TemplateStore()


def check_text(value: object, field: str, max_chars: int, setting: str, *, allow_empty: bool = True) -> str:
    """The value if it is text within max_chars, without control characters or unpaired
    surrogates; else EntryError naming the field, the limit and where the limit is set."""
    checker = FieldChecker(intake_policy())
    text = checker.check_text(value, field, max_chars, allow_empty=allow_empty)
    if text is None:
        (rejection,) = checker.out
        limit = max_chars if rejection.reason == "too_long" else None
        where = f" ({setting})" if limit is not None else ""
        raise EntryError(field, f"{rejection.detail}{where}", limit)
    return text


def check_id(value: object, field: str) -> str:
    return check_text(value, field, MAX_ID_CHARS, "gateway/ops/entry.py MAX_ID_CHARS", allow_empty=False)


def check_review(review: ReviewSettings, job_id: str, reviewer: str, reason: str) -> None:
    check_id(job_id, "job_id")
    check_text(reviewer, "reviewer", review.max_reviewer_chars, "review.max_reviewer_chars")
    check_text(reason, "reason", review.max_reason_chars, "review.max_reason_chars")


def catalog_bounds(event: Mapping[str, Any]) -> list[Rejection]:
    """What intake would reject this event for on size alone: its own validation and limits."""
    return [r for r in validate_event(event, intake_policy(), template_store()) if r.reason in SIZE_REASONS]
