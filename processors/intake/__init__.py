"""Intake's pure logic: event validation against a policy and a template catalogue, and fan-out
into jobs. The names below are the package's public surface; the modules beside it hold one
concern each (see validation.py's doc)."""

from processors.intake.event_schema import RISKS, text_or_none, with_defaults
from processors.intake.fanout import JOB_NAMESPACE, fan_out, idempotency_key, job_id_for
from processors.intake.policy import DEFAULT_POLICY_PATH, IntakePolicy, PolicyError
from processors.intake.rejection import Rejection, reasons_as_text
from processors.intake.template_check import TemplateCatalogue
from processors.intake.terms import RestrictedTerms
from processors.intake.validation import validate_event

__all__ = [
    "DEFAULT_POLICY_PATH",
    "JOB_NAMESPACE",
    "RISKS",
    "IntakePolicy",
    "PolicyError",
    "Rejection",
    "RestrictedTerms",
    "TemplateCatalogue",
    "fan_out",
    "idempotency_key",
    "job_id_for",
    "reasons_as_text",
    "text_or_none",
    "validate_event",
    "with_defaults",
]
