"""What intake's table says about one validated event in its slot partition: the plan.

Decided in this order, without side effects (the stage writes what the plan says):

1. The event id. Seen before with the same event digest: ``duplicate_event``. Seen with another
   digest: ``conflicting_duplicate`` (a reused id is never taken for a duplicate of something
   else). Seen, but written by this very message: a redelivery after a crash between the entry
   and the jobs, so the event is decided again as if new (fan-out is deterministic).
2. Each of its slots (one per job fan-out makes), against the slot's entry:
   - none: a new slot, version 1 of it as far as intake knows (``supersedes`` null);
   - occurred_at older than the slot's newest accepted one, or as old with other content: the
     whole event is a ``stale_event`` (the catalogue said something newer already);
   - same product digest: a duplicate of the slot's current job (its newest time moves up);
   - another digest: an update, a new version whose job ``supersedes`` the current one.
   An entry written by this very message is a redelivery again: its decision is redone from it.
3. Writes: the event's entry, and the entry of every slot it made or renewed.

The entries are those of processors.state.entry; ``Lookup`` is the table's get.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from processors.intake.content import event_digest, occurred_ms, product_digest
from processors.intake.fanout import job_id_for
from processors.state.entry import SeenEntry, event_key, legacy_job_key, slot_key

Verdict = Literal["accepted", "duplicate_event", "conflicting_duplicate", "stale_event"]
SlotKind = Literal["new", "update", "duplicate"]


class Lookup(Protocol):
    def get(self, key: str) -> SeenEntry | None: ...


@dataclass
class SlotDecision:
    job: dict[str, Any]  # as fan-out made it; for new and update, with supersedes set
    kind: SlotKind
    # The slot's entry before this event: for a duplicate, what it duplicates.
    current: SeenEntry | None = None

    @property
    def current_job_id(self) -> str:
        """The job that stands for the slot after this event."""
        if self.kind == "duplicate" and self.current is not None and self.current.job_ids:
            return self.current.job_ids[0]
        return str(self.job["job_id"])


@dataclass
class Plan:
    verdict: Verdict
    # The entry that decided a duplicate_event, conflicting_duplicate or stale_event.
    decided_by: SeenEntry | None = None
    stale_slot: str = ""  # the slot (idempotency key) a stale_event is stale for
    slots: list[SlotDecision] = field(default_factory=list)
    writes: list[tuple[str, SeenEntry]] = field(default_factory=list)


def plan_event(
    table: Lookup,
    event: Mapping[str, Any],
    jobs: list[dict[str, Any]],
    *,
    partition: int,
    offset: int,
    now_ms: int,
) -> Plan:
    event_id = str(event["event_id"])
    digest = event_digest(event)
    occurred = occurred_ms(event)
    seen = table.get(event_key(event_id))
    if seen is not None and not seen.written_by(partition, offset):
        # Written before v3 the digest is unknown: a duplicate, as it was then.
        if seen.digest and not seen.same_digest(digest):
            return Plan("conflicting_duplicate", decided_by=seen)
        return Plan("duplicate_event", decided_by=seen)

    content = product_digest(event)
    decisions: list[SlotDecision] = []
    for job in jobs:
        slot = str(job["idempotency_key"])
        current = _slot_entry(table, slot)
        if current is None:
            decisions.append(SlotDecision(job, "new"))
        elif current.written_by(partition, offset):
            decisions.append(_redo(job, current))
        elif occurred < current.occurred_at or (
            occurred == current.occurred_at and current.digest and not current.same_digest(content)
        ):
            return Plan("stale_event", decided_by=current, stale_slot=slot)
        elif not current.digest or current.same_digest(content):
            # An empty digest is an entry from before versions: whatever it made stands.
            decisions.append(SlotDecision(job, "duplicate", current))
        else:
            job["supersedes"] = current.job_ids[0] if current.job_ids else None
            decisions.append(SlotDecision(job, "update", current))

    plan = Plan("accepted", slots=decisions)
    made = tuple(str(d.job["job_id"]) for d in decisions if d.kind != "duplicate")
    plan.writes.append(
        (
            event_key(event_id),
            SeenEntry(
                partition=partition,
                job_ids=made,
                event_id="",  # the key holds it
                first_seen_at=now_ms,
                updated_at=now_ms,
                source_partition=partition,
                source_offset=offset,
                digest=bytes.fromhex(digest),
                occurred_at=occurred,
            ),
        )
    )
    for d in decisions:
        plan.writes.append(
            (
                slot_key(str(d.job["idempotency_key"])),
                _slot_write(d, event_id, content, occurred, partition, offset, now_ms),
            )
        )
    return plan


def _slot_entry(table: Lookup, slot: str) -> SeenEntry | None:
    entry = table.get(slot_key(slot))
    if entry is not None:
        return entry
    # A changelog from before slots: the job id then was derived from the slot key alone.
    return table.get(legacy_job_key(job_id_for(slot)))


def _redo(job: dict[str, Any], current: SeenEntry) -> SlotDecision:
    """This message wrote the slot's entry before a crash: it made the version there now."""
    if current.job_ids and current.job_ids[0] == job["job_id"]:
        job["supersedes"] = current.supersedes
        return SlotDecision(job, "update" if current.supersedes else "new")
    # A renewal never takes over the entry's source (see _slot_write), so this is unreachable
    # for duplicates; kept safe all the same.
    return SlotDecision(job, "duplicate", current)


def _slot_write(
    d: SlotDecision,
    event_id: str,
    content: str,
    occurred: int,
    partition: int,
    offset: int,
    now_ms: int,
) -> SeenEntry:
    if d.kind == "duplicate" and d.current is not None:
        # Renewed, not replaced: the version, its job and the message that made it stay (so a
        # redelivery of this message is decided from them again, as a duplicate); what moves is
        # the newest time the catalogue vouched for this content, and the expiry.
        return d.current.touched(
            partition=partition,
            occurred_at=max(d.current.occurred_at, occurred),
            digest=d.current.digest or bytes.fromhex(content),
            updated_at=now_ms,
        )
    return SeenEntry(
        partition=partition,
        job_ids=(str(d.job["job_id"]),),
        event_id=event_id,
        first_seen_at=now_ms,
        updated_at=now_ms,
        source_partition=partition,
        source_offset=offset,
        digest=bytes.fromhex(content),
        occurred_at=occurred,
        asset_version=int(d.job["asset_version"]),
        supersedes=d.job.get("supersedes"),
    )
