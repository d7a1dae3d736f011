"""The one error every part of prompting raises, with a machine-readable reason."""

from __future__ import annotations


class TemplateError(ValueError):
    """A template cannot be found, parsed or rendered. ``reason`` is a machine-readable code:
    unknown_template, unknown_version, invalid_template, missing_variable, render_failed,
    prompt_too_long, restricted_term, token_limit."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
