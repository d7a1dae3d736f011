"""Intake's pure logic: event validation against a policy, and fan-out into jobs."""

from processors.intake.fanout import JOB_NAMESPACE, fan_out, idempotency_key, job_id_for
from processors.intake.validation import (
    DEFAULT_POLICY_PATH,
    IntakePolicy,
    PolicyError,
    Rejection,
    RestrictedTerms,
    reasons_as_text,
    validate_event,
    with_defaults,
)

__all__ = [
    "DEFAULT_POLICY_PATH",
    "JOB_NAMESPACE",
    "IntakePolicy",
    "PolicyError",
    "Rejection",
    "RestrictedTerms",
    "fan_out",
    "idempotency_key",
    "job_id_for",
    "reasons_as_text",
    "validate_event",
    "with_defaults",
]
