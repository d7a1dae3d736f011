"""The template a request names, checked against the template catalogue: name and version in
one place, so an unknown name and an unknown pinned version get the same kind of answer (a
rejection with a reason), never one a rejection and the other a failure further down.

The catalogue is the one authority on which templates and versions exist (processors.prompting's
TemplateStore is the shipped one); intake keeps no pattern or list of its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from processors.intake.event_schema import text_or_none
from processors.intake.fields import FieldChecker, short


class TemplateCatalogue(Protocol):
    """What intake needs to know about templates; TemplateStore provides it."""

    def ids(self) -> Sequence[str]: ...

    def has(self, template_id: str) -> bool: ...

    def versions(self, template_id: str) -> Sequence[str]:
        """The versions of a template that exists, oldest first."""
        ...


def check_template_reference(
    c: FieldChecker, request: Mapping[str, Any], templates: TemplateCatalogue
) -> None:
    template_id = c.text(request, "template_id", "request.template_id", c.policy.max_text_chars)
    if template_id is not None and not templates.has(template_id):
        c.reject(
            "unknown_template",
            "request.template_id",
            f"no template named {short(template_id)}; known: {', '.join(templates.ids())}",
        )
        template_id = None
    version = c.text(
        request,
        "template_version",
        "request.template_version",
        c.policy.max_text_chars,
        required=False,
        allow_empty=True,
    )
    pinned = text_or_none(version)
    if pinned is None or template_id is None:
        return  # not pinned (the latest version is taken at fan-out), or nothing to pin it on
    versions = templates.versions(template_id)
    if pinned not in versions:
        c.reject(
            "unknown_template_version",
            "request.template_version",
            f"template {template_id!r} has no version {short(pinned)}; versions: {', '.join(versions)}",
        )
