"""Credit budgets: which account a request is charged to, what a job costs, and how a job's
terminal event settles its reservation. Intake reserves (processors/stages/intake.py, its ledger
in processors/intake/ledger.py); the runtime's outbox settles (settlement.py). docs/decisions.md,
"Credits", has the design."""

from processors.credits.accounts import Reservation, account_for, job_cost, reservation_of

__all__ = ["Reservation", "account_for", "job_cost", "reservation_of"]
