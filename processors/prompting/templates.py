"""Kept for importers that name this module (deploy/local/session.py, tests/bench): the names it
used to define now live in one module each (store, rendering, parsing, tokens, job_variables,
sanity), and processors.prompting re-exports them. New code imports from processors.prompting.

``python -m processors.prompting.templates`` still runs the sanity checker (now
``python -m processors.prompting``).
"""

from __future__ import annotations

from processors.prompting import (
    CLIP_MAX_TOKENS,
    DEFAULT_TEMPLATE_DIR,
    SCENES,
    PromptTemplate,
    RenderedPrompt,
    TemplateError,
    TemplateStore,
    Variable,
    approx_token_count,
    attributes_text,
    check_template,
    clip_token_counter,
    parse_template,
    render,
    variables_for_job,
    version_key,
)
from processors.prompting.sanity import main

__all__ = [
    "CLIP_MAX_TOKENS",
    "DEFAULT_TEMPLATE_DIR",
    "SCENES",
    "PromptTemplate",
    "RenderedPrompt",
    "TemplateError",
    "TemplateStore",
    "Variable",
    "approx_token_count",
    "attributes_text",
    "check_template",
    "clip_token_counter",
    "main",
    "parse_template",
    "render",
    "variables_for_job",
    "version_key",
]

if __name__ == "__main__":
    raise SystemExit(main())
