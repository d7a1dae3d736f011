"""Intake's side of credits: where a budgeted request is decided, whether it fits its account's
budget, the reservations it makes, and what intake learns back from settlements.

The stage calls this in order: ``charged`` (which account, if any) and ``home`` (its account's
partition) before de-duplication; ``fit`` after the table accepted the event (only jobs that will
run are charged: duplicates and refused events cost nothing); ``reserve`` with the accepted jobs;
``apply`` with the settlements read back from pipeline.events, so a release frees budget.
The ledger itself is processors/intake/ledger.py; the rule for settling is
processors/credits/settlement.py; the design is in docs/decisions.md, "Credits".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from processors.config import CreditSettings
from processors.credits.accounts import (
    Reservation,
    account_for,
    format_amount,
    job_cost,
    reservation_of,
)
from processors.intake.dedup import Plan
from processors.intake.ledger import Ledger, credit_key, to_micro
from processors.intake.settlements import Settled
from processors.intake.slot import account_partition
from processors.job_states import JobState
from processors.runtime import Event, InputRecord, Output
from processors.runtime.records import job_event
from processors.state.entry import SeenEntry
from schemas.topics import Topic


@dataclass(frozen=True)
class Charge:
    account: str
    field: str  # what matched: "campaign" or "source"


@dataclass(frozen=True)
class OverBudget:
    charge: Charge
    budget: float
    committed: float
    cost: float

    def detail(self) -> str:
        return (
            f"account {self.charge.account!r} has committed {self.committed:g} of its "
            f"{self.budget:g} credits; this request costs {self.cost:g}"
        )

    def attributes(self) -> dict[str, str]:
        return {
            "account": self.charge.account,
            "budget": format_amount(self.budget),
            "committed": format_amount(self.committed),
            "cost": format_amount(self.cost),
        }


class Budgets:
    def __init__(
        self,
        credits: CreditSettings,
        partitions: int,
        put: Callable[[str, SeenEntry], None],
        owns: Callable[[int], bool],
    ) -> None:
        """put: writes an entry into intake's table; owns(partition): whether this consumer
        holds that changelog partition now."""
        self.credits = credits
        self.partitions = partitions
        self.ledger = Ledger()
        self._put = put
        self._owns = owns

    def charged(self, event: Mapping[str, Any]) -> Charge | None:
        match = account_for(self.credits, event)
        return Charge(*match) if match is not None else None

    def home(self, charge: Charge) -> int:
        return account_partition(charge.account, self.partitions)

    def fit(self, plan: Plan, charge: Charge) -> OverBudget | None:
        """Marks each job that will run with its reservation, or says why the request does not fit.
        Jobs this account already holds (a redelivered message) are not charged twice."""
        made = [d.job for d in plan.slots if d.kind != "duplicate"]
        cost = 0.0
        for job in made:
            amount = job_cost(self.credits, job)
            job["credits"] = Reservation(charge.account, amount).to_record()
            if not self.ledger.holds(str(job["job_id"])):
                cost += amount
        budget = self.credits.accounts[charge.account].budget
        committed = self.ledger.committed(charge.account)
        if to_micro(committed) + to_micro(cost) > to_micro(budget):
            for job in made:
                job["credits"] = None
            return OverBudget(charge, budget, committed, cost)
        return None

    def reserve(self, plan: Plan, record: InputRecord, now_ms: int) -> tuple[list[Output], list[Event]]:
        """The ledger entries (to the changelog) and credit_reserved events of the accepted jobs."""
        outputs: list[Output] = []
        events: list[Event] = []
        for decision in plan.slots:
            reservation = reservation_of(decision.job)
            if decision.kind == "duplicate" or reservation is None:
                continue
            job_id = str(decision.job["job_id"])
            if not self.ledger.holds(job_id):
                entry = self.ledger.reserve(
                    job_id, reservation, partition=record.partition, offset=record.offset, now_ms=now_ms
                )
                outputs.append(self._write(job_id, entry))
            events.append(
                job_event(
                    decision.job,
                    JobState.CREDIT_RESERVED,
                    attributes={
                        "account": reservation.account,
                        "amount": format_amount(reservation.amount),
                        "committed": format_amount(self.ledger.committed(reservation.account)),
                        "budget": format_amount(self.credits.accounts[reservation.account].budget),
                    },
                )
            )
        return outputs, events

    def apply(self, settled: list[Settled]) -> int:
        """Settlements read back (processors/intake/settlements.py, already on the changelog)
        into the ledger of the accounts this consumer holds: a release frees its amount. The
        others reach their owner through the changelog. Returns how many changed the ledger."""
        changed = 0
        for s in settled:
            if self._owns(s.entry.partition) and self.ledger.settle(s.job_id, s.state, s.entry):
                self._put(credit_key(s.job_id), s.entry)
                changed += 1
        return changed

    def rebuild(self, entries: Iterable[tuple[str, SeenEntry]]) -> None:
        self.ledger.rebuild(entries)

    def _write(self, job_id: str, entry: SeenEntry) -> Output:
        key = credit_key(job_id)
        if self._owns(entry.partition):
            self._put(key, entry)
        return Output(Topic.INTAKE_SEEN, key, entry.to_record(key), partition=entry.partition)
