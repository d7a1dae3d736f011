"""How a job's terminal event settles its credit reservation: the one rule.

A delivered job (``published``) consumes what intake reserved; a job that ends otherwise
(``failed``, ``rejected`` by a reviewer, or ``dead_lettered``) releases it, with the terminal
event's reason. The settlement is an event of its own (``credit_consumed`` / ``credit_released``)
with the account and amount as attributes, emitted by the runtime's outbox beside the terminal
event, so no stage has to remember it.

Consumption is final, as ``published`` is (processors/job_states.py): a job released (say,
dead-lettered) and later replayed to publication counts consumed, and a release arriving after
its consumption changes nothing. The ledger (processors/intake/ledger.py) and the SQL
(processors/eventlog/sql/credits_by_account.sql) both apply that rule, so every job's
reservation is counted once: reserved = consumed + released + outstanding.

Pure (no runtime import): the runtime imports this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from processors.credits.accounts import format_amount, reservation_of
from processors.job_states import JobState

if TYPE_CHECKING:
    from processors.runtime.records import Event

CONSUMES: frozenset[str] = frozenset({JobState.PUBLISHED})
RELEASES: frozenset[str] = frozenset({JobState.FAILED, JobState.REJECTED, JobState.DEAD_LETTERED})


def settlement_for(event: Event, credits: Mapping[str, Any] | None) -> Event | None:
    """The settlement `event` makes of its job's reservation `credits`, or None."""
    # Imported here: the runtime imports this module while its package initialises.
    from processors.runtime.records import Event

    reservation = reservation_of(credits)
    if reservation is None or (event.state not in CONSUMES and event.state not in RELEASES):
        return None
    attributes = {
        "account": reservation.account,
        "amount": format_amount(reservation.amount),
        "settles": event.state,
    }
    common: dict[str, Any] = {
        # A release says why: the terminal event's reason, or its state when it gave none.
        "reason": event.reason or event.state,
        "detail": event.detail,
        "attempt": event.attempt,
        "attributes": attributes,
        "submitted_at": event.submitted_at,
        # Released then consumed (a replay) are two settlements of one job, two event ids.
        "discriminator": event.state,
    }
    if event.state in CONSUMES:
        return Event(event.job_id, JobState.CREDIT_CONSUMED, **common)
    return Event(event.job_id, JobState.CREDIT_RELEASED, **common)
