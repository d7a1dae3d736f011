"""What intake validation answers: a list of rejections, empty meaning accepted.

One :class:`Rejection` per offending field, each with a machine-readable reason code so
rejections can be counted and queried (the intake stage records the first as the event's reason
and all of them in its attributes):

``missing_field`` ``invalid_type`` ``invalid_text`` ``too_long`` ``invalid_enum`` ``invalid_value``
``invalid_size`` ``invalid_url`` ``no_product_reference`` ``unknown_template``
``unknown_template_version`` ``restricted_term`` ``unsupported_use`` ``too_many_attributes``
``too_many_references`` ``too_many_jobs`` ``webhook_not_allowed``

Decided against intake's de-duplication table, not by validation (processors/intake/dedup.py),
and recorded the same way: ``stale_event`` (field ``occurred_at``: not newer than what the
event's asset slot already accepted) and ``conflicting_duplicate`` (field ``event_id``: the id
was accepted before with other content).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Rejection:
    reason: str  # machine-readable code, see the module doc
    field: str  # dotted path of the offending field ("" for the event itself)
    detail: str  # for people

    def __str__(self) -> str:
        where = self.field or "event"
        return f"{self.reason} at {where}: {self.detail}"


def reasons_as_text(rejections: Iterable[Rejection]) -> str:
    return "; ".join(str(r) for r in rejections)
