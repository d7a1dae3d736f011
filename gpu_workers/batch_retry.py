"""A whole batch that must be tried again, said for every job in it.

When a dependency every request of a batch needs is down (every backend of a route, or storage)
the worker raises and the runtime retries the whole batch without committing. Each such failure
is a `retry` event for every job of the batch, with the reason, so no job has a silent gap:
- the events ride on the exception (BatchUnavailable.events): the runner emits them while it
  holds the batch (processors/runtime/outage.py, at its own pace during a long outage);
- the worker also keeps the first failure's events and puts them, with the number of tries,
  before each job's own events once the same batch succeeds: a runner that does not emit the
  exception's events still leaves no gap. Both carry the same event identity (job, state,
  reason, attempt, discriminator and the record's place), so ClickHouse keeps one of each.
"""

from __future__ import annotations

from processors.runtime import Event, InputRecord, TransientError

BatchKey = tuple[tuple[str, int, int], ...]


class BatchUnavailable(TransientError):
    """A dependency the whole batch needs is down: retry the batch, commit nothing."""

    def __init__(self, message: str, reason: str, events: list[Event]) -> None:
        super().__init__(message)
        self.reason = reason
        self.events = events


def batch_key(records: list[InputRecord]) -> BatchKey:
    return tuple((r.topic.value, r.partition, r.offset) for r in records)


class BatchRetries:
    """The retry events of the batch being retried (the runtime retries one batch at a time)."""

    def __init__(self) -> None:
        self._key: BatchKey | None = None
        self._failures = 0
        self._first: dict[int, Event] = {}

    def failed(self, records: list[InputRecord], reason: str, detail: str) -> list[Event]:
        """Record one failure of the whole batch; the events it means, one per job."""
        key = batch_key(records)
        if key != self._key:
            # Another batch: the runtime gave up on the last one, or retries a part of it.
            self._key, self._failures, self._first = key, 0, {}
        self._failures += 1
        events = []
        for slot, record in enumerate(records):
            job = record.value
            event = Event(
                job_id=record.job_id,
                state="retry",
                reason=reason,
                detail=detail[:500],
                attempt=int(job.get("attempt") or 0),
                attributes={"scope": "batch", "batch_size": str(len(records))},
                submitted_at=job.get("submitted_at"),
                discriminator=f"batch-try{self._failures}",
            )
            self._first.setdefault(slot, event)
            events.append(event)
        return events

    def take(self, records: list[InputRecord]) -> dict[int, list[Event]]:
        """Once this batch succeeded: by slot, the event of its first failure with how many
        tries it took (one event per job however long the outage was); empty if it never failed."""
        if batch_key(records) != self._key:
            return {}
        taken = {}
        for slot, event in self._first.items():
            event.attributes["tries"] = str(self._failures)
            taken[slot] = [event]
        self._key, self._failures, self._first = None, 0, {}
        return taken
