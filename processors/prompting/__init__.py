"""Prompt templates: versioned Jinja2 prompts with a front-matter contract, and their checks."""

from processors.prompting.templates import (
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
)

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
    "parse_template",
    "render",
    "variables_for_job",
]
