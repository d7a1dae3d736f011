"""Prompt templates: versioned Jinja2 prompts with a front-matter contract, and their checks.

One concern a module: scenes (the scene names), naming (ids, versions, their order), parsing (the
front-matter contract), rendering (strict Jinja, RenderedPrompt), tokens (the encoder's limit),
job_variables (what a job offers a template), store (the catalogue and version resolution) and
sanity (the author's checker, ``python -m processors.prompting``).
"""

from processors.prompting.errors import TemplateError
from processors.prompting.job_variables import attributes_text, variables_for_job
from processors.prompting.naming import version_key
from processors.prompting.parsing import parse_template
from processors.prompting.rendering import PromptTemplate, RenderedPrompt, Variable, render
from processors.prompting.sanity import check_store, check_template
from processors.prompting.scenes import SCENE_NAMES
from processors.prompting.store import DEFAULT_TEMPLATE_DIR, TemplateStore
from processors.prompting.tokens import CLIP_MAX_TOKENS, approx_token_count, clip_token_counter

# The old name of SCENE_NAMES, kept for importers of it.
SCENES = SCENE_NAMES

__all__ = [
    "CLIP_MAX_TOKENS",
    "DEFAULT_TEMPLATE_DIR",
    "SCENES",
    "SCENE_NAMES",
    "PromptTemplate",
    "RenderedPrompt",
    "TemplateError",
    "TemplateStore",
    "Variable",
    "approx_token_count",
    "attributes_text",
    "check_store",
    "check_template",
    "clip_token_counter",
    "parse_template",
    "render",
    "variables_for_job",
    "version_key",
]
