"""Which account covers a request, and what one of its jobs costs: both from configuration
(`credits.accounts`, `credits.template_costs`, `credits.default_job_cost`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from processors.config import CreditSettings


@dataclass(frozen=True)
class Reservation:
    """What intake reserved for one job, carried on the job record (job v4 `credits`)."""

    account: str
    amount: float

    def to_record(self) -> dict[str, Any]:
        return {"account": self.account, "amount": self.amount}


def account_for(credits: CreditSettings, event: Mapping[str, Any]) -> tuple[str, str] | None:
    """(account, field) charged for a catalog event: the first account (in configuration order)
    listing its campaign, else the first listing its source; None: not budgeted. field names
    what matched ("campaign" or "source"), the field an over-budget rejection points at."""
    campaign = event.get("campaign") or ""
    source = event.get("source") or ""
    if campaign:
        for name, account in credits.accounts.items():
            if campaign in account.campaigns:
                return name, "campaign"
    if source:
        for name, account in credits.accounts.items():
            if source in account.sources:
                return name, "source"
    return None


def job_cost(credits: CreditSettings, job: Mapping[str, Any]) -> float:
    template = str((job.get("spec") or {}).get("template_id") or "")
    return float(credits.template_costs.get(template, credits.default_job_cost))


def job_credits(job: Mapping[str, Any]) -> dict[str, Any] | None:
    """The reservation a job record holds for its own settlement. A replay (``replay_of`` set:
    an operator's rerun under a new job id) carries its original's but settles nothing: it was
    never reserved, and the original settled already."""
    if job.get("replay_of"):
        return None
    credits = job.get("credits")
    return dict(credits) if isinstance(credits, Mapping) else None


def reservation_of(value: Mapping[str, Any] | None) -> Reservation | None:
    """The reservation a job record (or an event's copy of it) carries, if any."""
    if not value:
        return None
    credits = value.get("credits") if "credits" in value else value
    if not isinstance(credits, Mapping) or not credits.get("account"):
        return None
    return Reservation(str(credits["account"]), float(credits.get("amount") or 0.0))


def format_amount(amount: float) -> str:
    """Amounts as event attributes (strings): repr round-trips a float exactly."""
    return repr(float(amount))
