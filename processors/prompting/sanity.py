"""The template sanity checker: what a template author should fix before shipping a template.

``python -m processors.prompting [root]`` (this module's ``main``) checks every version of every
template under root (the shipped templates by default) against the same limits and restricted
terms the pipeline applies, with CLIP's exact tokenizer when open_clip is installed.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

import jinja2.meta

from processors.intake.policy import IntakePolicy
from processors.intake.terms import RestrictedTerms
from processors.prompting.errors import TemplateError
from processors.prompting.rendering import CONTEXT_NAMES, DEFAULT_MAX_CHARS, PromptTemplate, environment
from processors.prompting.store import TemplateStore
from processors.prompting.tokens import CLIP_MAX_TOKENS, TokenCounter, clip_token_counter


def check_template(
    template: PromptTemplate,
    *,
    restricted_terms: RestrictedTerms | Iterable[str] = (),
    max_chars: int = DEFAULT_MAX_CHARS,
    max_tokens: int = CLIP_MAX_TOKENS,
    token_counter: TokenCounter | None = None,
) -> list[str]:
    """Problems a template author should fix before shipping it (empty when none):
    undeclared or unused variables, required variables without an example, and an example
    rendering (all variables, then required ones only) that breaks a limit."""
    problems: list[str] = []
    env = environment()
    used = set()
    for part, text in (("body", template.body), ("negative_prompt", template.negative_prompt)):
        names = jinja2.meta.find_undeclared_variables(env.parse(text))
        used |= names
        declared = {v.name for v in template.variables} | CONTEXT_NAMES
        problems += [f"{part} uses undeclared variable {n!r}" for n in sorted(names - declared)]
    problems += [
        f"variable {v.name!r} is declared but never used" for v in template.variables if v.name not in used
    ]
    problems += [
        f"required variable {v.name!r} has no example"
        for v in template.variables
        if v.required and v.example is None
    ]
    full = {v.name: v.example for v in template.variables if v.example is not None}
    minimal = {v.name: v.example for v in template.variables if v.required}
    for label, sample in (("all variables", full), ("required variables only", minimal)):
        try:
            rendered = template.render(
                sample,
                restricted_terms=restricted_terms,
                max_chars=max_chars,
                max_tokens=max_tokens,
                token_counter=token_counter,
            )
        except TemplateError as exc:
            problems.append(f"example rendering with {label}: {exc}")
            continue
        if rendered.dropped:
            problems.append(
                f"example rendering with {label} only fits the token limit without "
                f"{', '.join(rendered.dropped)}"
            )
    return problems


def check_store(store: TemplateStore, **limits: Any) -> dict[str, list[str]]:
    """Sanity-check every version of every template; only templates with problems appear."""
    problems: dict[str, list[str]] = {}
    for template_id in store.ids():
        for version in store.versions(template_id):
            template = store.get(template_id, version)
            found = check_template(template, **limits)
            if found:
                problems[template.label] = found
    return problems


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        store = TemplateStore(args[0] if args else None)
    except TemplateError as exc:
        print(exc, file=sys.stderr)
        return 1
    # The intake policy's restricted terms: the rendered prompt is checked against the same list.
    terms = IntakePolicy.load().restricted
    problems = check_store(store, restricted_terms=terms, token_counter=clip_token_counter())
    for label, found in problems.items():
        for problem in found:
            print(f"{label}: {problem}", file=sys.stderr)
    total = sum(len(store.versions(i)) for i in store.ids())
    print(f"checked {total} template versions, {len(problems)} with problems")
    return 1 if problems else 0
