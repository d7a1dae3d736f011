"""Intake's credit ledger: one entry per budgeted job, in intake's changelog-backed table.

Each reservation is a ``credit:<job id>`` entry of the de-duplication table (SeenTable), written to
the changelog partition of its account (processors/intake/slot.py: account_partition), so it is
restored with the rest of the table after a restart or a rebalance, and one consumer holds every
entry of an account. The table's entry is read per key; the meaning of its fields for this key:

    job_ids        (the job id,)
    event_id       the account
    asset_version  the amount reserved, in micro-credits (the record has no float field to spare)
    supersedes     None while reserved; "consumed" or "released" once settled

An account's commitment is what intake must not let pass its budget: every reservation not
released (consumed and outstanding alike). The index below keeps it per account in memory and is
rebuilt from the table whenever the table changed under it (restore, revoke, sweep).

Entries expire with the table (intake.dedup_ttl_s, 30 days): a budget counts what was committed
within that window (docs/decisions.md, "Credits").
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from processors.credits.accounts import Reservation
from processors.state.entry import UNKNOWN, SeenEntry

CREDIT_PREFIX = "credit:"
CONSUMED = "consumed"
RELEASED = "released"
_MICRO = 1_000_000


def credit_key(job_id: str) -> str:
    return f"{CREDIT_PREFIX}{job_id}"


def to_micro(amount: float) -> int:
    return round(amount * _MICRO)


@dataclass
class Held:
    account: str
    micro: int
    state: str | None  # None: reserved, outstanding


class Ledger:
    def __init__(self) -> None:
        self._jobs: dict[str, Held] = {}
        self._committed: dict[str, int] = {}  # account -> micro-credits not released

    # -- reading ------------------------------------------------------------------------------

    def committed(self, account: str) -> float:
        return self._committed.get(account, 0) / _MICRO

    def holds(self, job_id: str) -> bool:
        return job_id in self._jobs

    def rebuild(self, entries: Iterable[tuple[str, SeenEntry]]) -> None:
        """The index from the table's credit entries (all others skipped)."""
        self._jobs.clear()
        self._committed.clear()
        for key, entry in entries:
            if key.startswith(CREDIT_PREFIX):
                self._apply(key[len(CREDIT_PREFIX) :], entry)

    # -- writing (the stage puts the entry in the table and sends it with its batch) ----------

    def reserve(
        self, job_id: str, reservation: Reservation, *, partition: int, offset: int, now_ms: int
    ) -> SeenEntry:
        entry = SeenEntry(
            partition=partition,
            job_ids=(job_id,),
            event_id=reservation.account,
            first_seen_at=now_ms,
            updated_at=now_ms,
            source_partition=partition,
            source_offset=offset,
            asset_version=to_micro(reservation.amount),
            supersedes=None,
        )
        self._apply(job_id, entry)
        return entry

    def settle(self, job_id: str, state: str, entry: SeenEntry) -> bool:
        """Applies a settlement (CONSUMED or RELEASED, its entry as written); False when it
        changes nothing: already settled so, or released after its consumption (consumption is
        final)."""
        held = self._jobs.get(job_id)
        if held is not None and (held.state == state or held.state == CONSUMED):
            return False
        self._apply(job_id, entry)
        return True

    def _apply(self, job_id: str, entry: SeenEntry) -> None:
        before = self._jobs.get(job_id)
        if before is not None and before.state != RELEASED:
            self._committed[before.account] -= before.micro
        held = Held(entry.event_id, max(0, entry.asset_version), entry.supersedes)
        self._jobs[job_id] = held
        if held.state != RELEASED:
            self._committed[held.account] = self._committed.get(held.account, 0) + held.micro


def settled_entry(
    job_id: str, reservation: Reservation, state: str, partition: int, now_ms: int
) -> SeenEntry:
    """A job's ledger entry once settled (CONSUMED or RELEASED), in its account's partition."""
    return SeenEntry(
        partition=partition,
        job_ids=(job_id,),
        event_id=reservation.account,
        first_seen_at=now_ms,
        updated_at=now_ms,
        source_partition=UNKNOWN,
        source_offset=UNKNOWN,
        asset_version=to_micro(reservation.amount),
        supersedes=state,
    )
