"""Rendering a parsed template into a prompt: strict Jinja2, fitting the token limit, the limits
checked, and the :class:`RenderedPrompt` whose ``to_record()`` is the job's prompt lineage.

Both the body (the positive prompt) and ``negative_prompt`` are Jinja2 templates. They see the
declared variables plus ``scene``, ``lighting`` and ``brand_constraints``. Rendering is strict
(StrictUndefined): a missing variable is an error naming it, never an empty hole in a prompt.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from processors.intake.terms import RestrictedTerms, as_restricted_terms
from processors.prompting.errors import TemplateError
from processors.prompting.job_variables import attributes_text
from processors.prompting.tokens import CLIP_MAX_TOKENS, TokenCounter, approx_token_count

DEFAULT_MAX_CHARS = 1000
CONTEXT_NAMES = frozenset({"scene", "lighting", "brand_constraints"})
# The key to_record() adds to the recorded variables, naming those dropped to fit.
DROPPED_KEY = "dropped_variables"

_UNDEFINED = re.compile(r"'([^']+)' is undefined|has no attribute '([^']+)'")


@dataclass(frozen=True)
class Variable:
    name: str
    required: bool
    description: str = ""
    default: str | None = None
    example: str | None = None


@dataclass(frozen=True)
class RenderedPrompt:
    positive: str
    negative: str
    scene: str
    template_id: str
    template_version: str
    variables: dict[str, str]  # the declared variables as rendered, for lineage
    dropped: tuple[str, ...] = ()  # optional variables left out to fit the token limit

    def to_record(self) -> dict[str, Any]:
        """The job's ``prompt`` section (schema Prompt). The scene, which the schema has no field
        for, travels in variables["scene"] so backends without a model can read it; variables
        left out to fit the token limit are named in variables["dropped_variables"]."""
        variables = {**self.variables, "scene": self.scene}
        if self.dropped:
            variables[DROPPED_KEY] = ",".join(self.dropped)
        return {
            "template_id": self.template_id,
            "template_version": self.template_version,
            "positive": self.positive,
            "negative": self.negative,
            "variables": variables,
        }


@dataclass(frozen=True)
class PromptTemplate:
    id: str
    version: str
    scene: str
    lighting: str
    brand_constraints: tuple[str, ...]
    negative_prompt: str
    variables: tuple[Variable, ...]
    description: str
    body: str
    source: str
    _positive: jinja2.Template = field(repr=False, compare=False)
    _negative: jinja2.Template = field(repr=False, compare=False)

    @property
    def label(self) -> str:
        return f"{self.id}@{self.version}"

    @property
    def required_variables(self) -> list[str]:
        return [v.name for v in self.variables if v.required]

    def render(
        self,
        variables: Mapping[str, object],
        *,
        restricted_terms: RestrictedTerms | Iterable[str] = (),
        max_chars: int = DEFAULT_MAX_CHARS,
        max_tokens: int = CLIP_MAX_TOKENS,
        token_counter: TokenCounter | None = None,
    ) -> RenderedPrompt:
        """Render both prompts and check them against the limits.

        Over the token limit, optional variables are reset to their defaults one at a time, the
        last declared first (declaration order is importance order), before giving up with
        ``token_limit``: a product with a long title gets a shorter prompt, not a failed job.
        The reset variables are listed in ``RenderedPrompt.dropped``.
        """
        count = token_counter or approx_token_count
        context = self._context(variables)
        droppable = [v for v in self.variables if not v.required and context[v.name] != v.default]
        dropped: list[str] = []
        while True:
            positive = _tidy(self._run(self._positive, context, "body"))
            negative = _tidy(self._run(self._negative, context, "negative_prompt"))
            if not droppable or max(count(positive), count(negative)) <= max_tokens:
                break
            var = droppable.pop()
            context[var.name] = var.default
            dropped.append(var.name)
        _check_limits(self.label, positive, negative, restricted_terms, max_chars, max_tokens, count)
        recorded = {v.name: _as_text(context[v.name]) for v in self.variables}
        return RenderedPrompt(positive, negative, self.scene, self.id, self.version, recorded, tuple(dropped))

    def _context(self, variables: Mapping[str, object]) -> dict[str, object]:
        context: dict[str, object] = {}
        for var in self.variables:
            value = variables.get(var.name)
            if _blank(value):
                if var.required:
                    raise TemplateError(
                        "missing_variable",
                        f"{self.label} needs variable {var.name!r} ({var.description or 'no description'})",
                    )
                value = var.default
            context[var.name] = value
        context.update(
            scene=self.scene, lighting=self.lighting, brand_constraints=list(self.brand_constraints)
        )
        return context

    def _run(self, template: jinja2.Template, context: dict[str, object], part: str) -> str:
        try:
            return template.render(context)
        except jinja2.UndefinedError as exc:
            match = _UNDEFINED.search(str(exc))
            name = next((g for g in match.groups() if g), str(exc)) if match else str(exc)
            raise TemplateError("missing_variable", f"{self.label} {part} uses undefined {name!r}") from exc
        except jinja2.TemplateError as exc:
            raise TemplateError("render_failed", f"{self.label} {part}: {exc}") from exc


def render(template: PromptTemplate, variables: Mapping[str, object], **limits: Any) -> RenderedPrompt:
    """Render a template; see PromptTemplate.render for the limits."""
    return template.render(variables, **limits)


def _words(value: object, n: int) -> str:
    """Jinja filter: the first n words, so a long title cannot crowd the scene out of 77 tokens."""
    return " ".join(str(value).split()[:n]) if value is not None else ""


@lru_cache(maxsize=1)
def environment() -> SandboxedEnvironment:
    """The one Jinja environment templates are compiled and analysed in."""
    # Sandboxed although templates are reviewed files: variables carry catalog text, and a
    # template store may one day be edited outside the repository.
    # finalize: an optional variable left at None prints nothing, not "None".
    env = SandboxedEnvironment(
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=lambda value: "" if value is None else value,
    )
    env.filters["words"] = _words
    return env


def _check_limits(
    label: str,
    positive: str,
    negative: str,
    restricted_terms: RestrictedTerms | Iterable[str],
    max_chars: int,
    max_tokens: int,
    count: TokenCounter,
) -> None:
    for part, text in (("positive", positive), ("negative", negative)):
        if len(text) > max_chars:
            raise TemplateError(
                "prompt_too_long", f"{label} {part} prompt is {len(text)} characters, at most {max_chars}"
            )
        tokens = count(text)
        if tokens > max_tokens:
            raise TemplateError(
                "token_limit",
                f"{label} {part} prompt is ~{tokens} tokens, the text encoder takes {max_tokens}",
            )
    # Only the positive prompt: a negative prompt naming a term asks the model to avoid it.
    found = as_restricted_terms(restricted_terms).find(positive)
    if found:
        raise TemplateError("restricted_term", f"{label} positive prompt contains {', '.join(found)}")


def _blank(value: object) -> bool:
    # Not intake's text_or_none: variables are not only text (attributes is a mapping, width an
    # int), and only a None or blank string counts as absent.
    return value is None or (isinstance(value, str) and not value.strip())


def _as_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, Mapping):
        return attributes_text(value)
    if isinstance(value, list | tuple):
        return ", ".join(map(str, value))
    return str(value)


def _tidy(text: str) -> str:
    # Bodies are written over several lines with optional parts; the prompt is one clean line.
    text = " ".join(text.split())
    text = re.sub(r"\s+([,.;])", r"\1", text)
    text = re.sub(r"([,;])(?:\s*[,;])+", r"\1", text)
    return text.strip(" ,;")
