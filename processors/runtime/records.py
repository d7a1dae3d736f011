"""What a handler sees and what it returns."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

from processors.credits.accounts import job_credits
from schemas.topics import Topic


def now_ms() -> int:
    """Epoch millis: how every runtime timestamp (events, dead letters) is written."""
    return int(time.time() * 1000)


def to_millis(value: dt.datetime | int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return int(value.timestamp() * 1000)
    return int(value)


@dataclass
class InputRecord:
    topic: Topic
    partition: int
    offset: int
    key: bytes | None
    value: dict[str, Any]
    raw_value: bytes
    headers: list[tuple[str, bytes]]
    timestamp_ms: int

    @property
    def job_id(self) -> str:
        job_id = self.value.get("job_id") or self.value.get("event_id")
        if job_id:
            return str(job_id)
        return self.key.decode("utf-8", "replace") if self.key else ""


@dataclass
class Output:
    """A record to produce, keyed by job id so one job's messages stay in order."""

    topic: Topic
    key: str
    value: dict[str, Any]
    # None: partitioned by key. Set only for state changelogs co-partitioned with an input.
    partition: int | None = None


@dataclass
class Event:
    """A state change of one job at this stage; the runner adds stage, time, duration and id."""

    job_id: str
    state: str
    reason: str = ""
    detail: str = ""
    attempt: int = 0
    attributes: dict[str, str] = field(default_factory=dict)
    submitted_at: dt.datetime | int | None = None
    # Distinguishes repeated events with the same (job, state, attempt, reason), e.g. retries.
    discriminator: str = ""
    # The job's credit reservation (job v4 `credits`), so the outbox can settle it when this
    # event ends the job (processors/credits/settlement.py). Not part of the event itself.
    credits: dict[str, Any] | None = None


@dataclass
class Outcome:
    outputs: list[Output] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    # Set by batch handlers when one record failed on its own after their own retries:
    # the runtime dead-letters that record and the rest of the batch carries on.
    dead_letter: BaseException | None = None
    attempts: int = 1
    # Side effects still running (e.g. image uploads) that must finish before the outputs are
    # produced. A prefetching runner lets them run while the next batch is handled.
    effects: list[Awaitable[Any]] = field(default_factory=list)

    @classmethod
    def forward(
        cls,
        topic: Topic,
        job: dict[str, Any],
        state: str,
        **attributes: str,
    ) -> Outcome:
        """Pass the job on to the next topic and record the state it is in."""
        return cls(
            outputs=[Output(topic, job["job_id"], job)],
            events=[job_event(job, state, attributes=attributes)],
        )

    @classmethod
    def fail(cls, job: dict[str, Any], reason: str, detail: str, **attributes: str) -> Outcome:
        """The job ends here, failed, with a reason: nothing goes downstream."""
        return cls(events=[job_event(job, "failed", reason=reason, detail=detail, attributes=attributes)])


def job_event(
    job: dict[str, Any],
    state: str,
    reason: str = "",
    detail: str = "",
    attributes: dict[str, str] | None = None,
) -> Event:
    return Event(
        job_id=job["job_id"],
        state=state,
        reason=reason,
        detail=detail,
        attempt=int(job.get("attempt") or 0),
        attributes={k: str(v) for k, v in (attributes or {}).items()},
        submitted_at=job.get("submitted_at"),
        credits=job_credits(job),
    )
