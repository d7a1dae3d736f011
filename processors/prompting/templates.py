"""Versioned prompt templates: YAML front matter (the contract) plus a Jinja2 body (the prompt).

A template lives at ``<root>/<id>/<version>.j2``::

    ---
    id: studio-hero
    version: 1.0.0
    description: ...
    scene: studio            # the CPU compositor's scene: studio | kitchen | outdoor | holiday
    lighting: soft key light from the left
    brand_constraints: [no competitor logos, product colours unaltered]
    negative_prompt: blurry, watermark, {{ brand }} misspelled
    variables:
      - {name: product_title, required: true, description: ..., example: Steel kettle}
    ---
    {{ product_title | words(12) }}, professional studio photograph, {{ lighting }}

The body renders the positive prompt; ``negative_prompt`` is a Jinja2 template too. Both see the
declared variables plus ``scene``, ``lighting`` and ``brand_constraints``. Rendering is strict
(StrictUndefined): a missing variable is an error naming it, never an empty hole in a prompt.
Published versions are immutable; a change is a new version file, so a job's recorded
(template_id, template_version) always names the exact text that made its prompt.

``python -m processors.prompting.templates [root]`` runs the sanity checker over every template.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta
import yaml
from jinja2.sandbox import SandboxedEnvironment

from processors.intake.validation import RestrictedTerms

DEFAULT_TEMPLATE_DIR = Path(__file__).with_name("templates")
SCENES = ("studio", "kitchen", "outdoor", "holiday")
# CLIP's text encoder (SD 1.x/2.x, and both SDXL encoders) sees 77 tokens including its start
# and end tokens; anything beyond is silently cut, so a long prompt loses its tail without error.
CLIP_MAX_TOKENS = 77
DEFAULT_MAX_CHARS = 1000
# How many product attributes variables_for_job puts in attributes_text, and how long a value
# may be to qualify: prose-length values (descriptions) would crowd out the scene.
MAX_PROMPT_ATTRIBUTES = 6
MAX_PROMPT_ATTRIBUTE_CHARS = 40
CONTEXT_NAMES = frozenset({"scene", "lighting", "brand_constraints"})
# Not declarable: context names, and the key to_record() adds to the recorded variables.
_RESERVED = CONTEXT_NAMES | {"dropped_variables"}

_ID = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_VERSION = re.compile(r"^[0-9]+\.[0-9]+\.[0-9]+$")
_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)", re.DOTALL)
_UNDEFINED = re.compile(r"'([^']+)' is undefined|has no attribute '([^']+)'")

TokenCounter = Callable[[str], int]


class TemplateError(ValueError):
    """A template cannot be found, parsed or rendered. ``reason`` is a machine-readable code:
    unknown_template, unknown_version, invalid_template, missing_variable, render_failed,
    prompt_too_long, restricted_term, token_limit."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


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
            variables["dropped_variables"] = ",".join(self.dropped)
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


# --- token counting ---------------------------------------------------------------------------

# CLIP's own pre-tokenizer split: contractions, letter runs, single digits, punctuation runs.
_PRETOKEN = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|[^\s\w]+|_+", re.IGNORECASE)


def approx_token_count(text: str) -> int:
    """Approximate CLIP BPE token count, start and end tokens included.

    Splits like CLIP's pre-tokenizer, then counts one token per ASCII word of up to 5 letters and
    one more per further 4 letters (BPE keeps common words whole but splits rare long ones), the
    UTF-8 byte length of anything non-ASCII (byte-level BPE: CJK text costs 2-3 tokens a
    character), one per digit and one per ASCII punctuation character. Measured against the real
    CLIP tokenizer it counts ~25% more on English prose and under-counts ~2% of 5-30 word
    snippets, so it errs on the side of counting more but is not a strict bound. Pass a real
    tokenizer (``clip_token_counter()``) as ``token_counter`` where exactness matters.
    """
    count = 2
    for piece in _PRETOKEN.findall(text.casefold()):
        if piece.isascii() and piece.isalpha():
            count += 1 + math.ceil(max(0, len(piece) - 5) / 4)
        else:
            # Byte-level BPE: a non-ASCII character costs up to its UTF-8 length in tokens.
            count += len(piece.encode("utf-8", "surrogatepass"))
    return count


@lru_cache(maxsize=1)
def clip_token_counter() -> TokenCounter | None:
    """The exact CLIP tokenizer from open_clip when installed (its vocabulary ships in the
    package: nothing is downloaded), else None."""
    try:
        from open_clip.tokenizer import SimpleTokenizer
    except ImportError:
        return None
    tokenizer = SimpleTokenizer()
    return lambda text: len(tokenizer.encode(text)) + 2


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
    terms = (
        restricted_terms if isinstance(restricted_terms, RestrictedTerms) else _terms(tuple(restricted_terms))
    )
    # Only the positive prompt: a negative prompt naming a term asks the model to avoid it.
    found = terms.find(positive)
    if found:
        raise TemplateError("restricted_term", f"{label} positive prompt contains {', '.join(found)}")


@lru_cache(maxsize=16)
def _terms(terms: tuple[str, ...]) -> RestrictedTerms:
    return RestrictedTerms(terms)


# --- parsing and the store --------------------------------------------------------------------


def _words(value: object, n: int) -> str:
    """Jinja filter: the first n words, so a long title cannot crowd the scene out of 77 tokens."""
    return " ".join(str(value).split()[:n]) if value is not None else ""


@lru_cache(maxsize=1)
def _environment() -> SandboxedEnvironment:
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


def parse_template(text: str, source: str = "<string>") -> PromptTemplate:
    match = _FRONT_MATTER.match(text)
    if not match:
        raise TemplateError("invalid_template", f"{source}: no '---' front-matter block at the top")
    try:
        meta = yaml.safe_load(match.group(1)) or {}
    except yaml.YAMLError as exc:
        raise TemplateError("invalid_template", f"{source}: front matter: {exc}") from exc
    if not isinstance(meta, dict):
        raise TemplateError("invalid_template", f"{source}: front matter must be a mapping")
    body = text[match.end() :]
    env = _environment()
    try:
        return PromptTemplate(
            id=_meta_str(meta, "id", source, pattern=_ID),
            version=_meta_str(meta, "version", source, pattern=_VERSION),
            scene=_meta_scene(meta, source),
            lighting=_meta_str(meta, "lighting", source),
            brand_constraints=_meta_str_list(meta, "brand_constraints", source),
            negative_prompt=_meta_str(meta, "negative_prompt", source, allow_empty=True),
            variables=_meta_variables(meta, source),
            description=str(meta.get("description") or ""),
            body=body,
            source=source,
            _positive=env.from_string(body),
            _negative=env.from_string(str(meta.get("negative_prompt") or "")),
        )
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError("invalid_template", f"{source}: line {exc.lineno}: {exc}") from exc


def _meta_str(
    meta: Mapping[str, Any],
    key: str,
    source: str,
    *,
    pattern: re.Pattern[str] | None = None,
    allow_empty: bool = False,
) -> str:
    value = meta.get(key)
    if value is None and allow_empty:
        return ""
    if not isinstance(value, str) or (not allow_empty and not value.strip()):
        raise TemplateError("invalid_template", f"{source}: front matter needs a string {key!r}")
    if pattern is not None and not pattern.fullmatch(value):
        raise TemplateError("invalid_template", f"{source}: {key} {value!r} does not match {pattern.pattern}")
    return value


def _meta_scene(meta: Mapping[str, Any], source: str) -> str:
    scene = _meta_str(meta, "scene", source)
    if scene not in SCENES:
        raise TemplateError("invalid_template", f"{source}: scene {scene!r} is not one of {list(SCENES)}")
    return scene


def _meta_str_list(meta: Mapping[str, Any], key: str, source: str) -> tuple[str, ...]:
    value = meta.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TemplateError("invalid_template", f"{source}: {key} must be a list of strings")
    return tuple(value)


def _meta_variables(meta: Mapping[str, Any], source: str) -> tuple[Variable, ...]:
    raw = meta.get("variables") or []
    if not isinstance(raw, list):
        raise TemplateError("invalid_template", f"{source}: variables must be a list")
    out: list[Variable] = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise TemplateError("invalid_template", f"{source}: variables[{i}] needs a name")
        unknown = set(item) - {"name", "required", "description", "default", "example"}
        if unknown:
            raise TemplateError(
                "invalid_template", f"{source}: variables[{i}] has unknown keys {sorted(unknown)}"
            )
        name = item["name"]
        if name in _RESERVED or any(v.name == name for v in out):
            raise TemplateError(
                "invalid_template", f"{source}: variable {name!r} is reserved or declared twice"
            )
        if not isinstance(item.get("required", False), bool):
            raise TemplateError("invalid_template", f"{source}: {name}.required must be a bool")
        out.append(
            Variable(
                name=name,
                required=item.get("required", False),
                description=str(item.get("description") or ""),
                default=None if item.get("default") is None else str(item["default"]),
                example=None if item.get("example") is None else str(item["example"]),
            )
        )
    return tuple(out)


def version_key(version: str) -> tuple[int, ...]:
    """Semantic order: 1.10.0 after 1.9.0."""
    return tuple(int(p) for p in version.split("."))


class TemplateStore:
    """Every template under a directory, parsed once at start-up so a broken file fails fast."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root else DEFAULT_TEMPLATE_DIR
        self._templates: dict[str, dict[str, PromptTemplate]] = {}
        for file in sorted(self.root.glob("*/*.j2")):
            template = parse_template(file.read_text(encoding="utf-8"), str(file))
            if (template.id, template.version) != (file.parent.name, file.stem):
                raise TemplateError(
                    "invalid_template",
                    f"{file}: front matter says {template.label}, the path says "
                    f"{file.parent.name}@{file.stem}",
                )
            self._templates.setdefault(template.id, {})[template.version] = template

    def ids(self) -> list[str]:
        return sorted(self._templates)

    def has(self, template_id: str) -> bool:
        return template_id in self._templates

    def has_version(self, template_id: str, version: str) -> bool:
        return version in self._templates.get(template_id, {})

    def versions(self, template_id: str) -> list[str]:
        return sorted(self._by_id(template_id), key=version_key)

    def latest(self, template_id: str) -> str:
        return self.versions(template_id)[-1]

    def get(self, template_id: str, version: str | None = None) -> PromptTemplate:
        by_version = self._by_id(template_id)
        chosen = version or self.latest(template_id)
        try:
            return by_version[chosen]
        except KeyError:
            raise TemplateError(
                "unknown_version",
                f"template {template_id!r} has no version {chosen!r}; known: {self.versions(template_id)}",
            ) from None

    def resolve_version(self, template_id: str, pinned: str | None = None) -> str:
        """The version a job will use: the pinned one if it exists, else the latest. This is the
        ``template_version_of`` that intake's fan_out takes."""
        return self.get(template_id, pinned).version

    def render(
        self,
        template: PromptTemplate | str,
        variables: Mapping[str, object],
        version: str | None = None,
        **limits: Any,
    ) -> RenderedPrompt:
        if isinstance(template, str):
            template = self.get(template, version)
        return template.render(variables, **limits)

    def check_all(self, **limits: Any) -> dict[str, list[str]]:
        """Sanity-check every version of every template; only templates with problems appear."""
        problems: dict[str, list[str]] = {}
        for template_id in self.ids():
            for version in self.versions(template_id):
                template = self.get(template_id, version)
                found = check_template(template, **limits)
                if found:
                    problems[template.label] = found
        return problems

    def _by_id(self, template_id: str) -> dict[str, PromptTemplate]:
        try:
            return self._templates[template_id]
        except KeyError:
            raise TemplateError(
                "unknown_template", f"no template {template_id!r}; known: {self.ids()}"
            ) from None


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
    env = _environment()
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


# --- job variables ----------------------------------------------------------------------------


def variables_for_job(job: Mapping[str, Any]) -> dict[str, object]:
    """Every variable a template may declare, taken from a Job record."""
    product = job.get("product") or {}
    spec = job.get("spec") or {}
    attributes = dict(product.get("attributes") or {})
    width, height = int(spec.get("width") or 0), int(spec.get("height") or 0)
    overlay = spec.get("text_overlay")
    return {
        "product_title": product.get("title"),
        "brand": product.get("brand"),
        "category": product.get("category"),
        "attributes": attributes,
        "attributes_text": attributes_text(attributes),
        "asset_type": spec.get("asset_type"),
        "channel": spec.get("channel"),
        "locale": spec.get("locale"),
        "text_overlay": overlay if overlay and overlay.strip() else None,
        "campaign": spec.get("campaign"),
        "width": width,
        "height": height,
        "aspect": ("square" if width == height else "landscape" if width > height else "portrait"),
    }


def attributes_text(attributes: Mapping[str, str]) -> str:
    """'colour: red, material: steel': short attributes in key order (stable prompts)."""
    items = [
        f"{key.replace('_', ' ')}: {value}"
        for key, value in sorted(attributes.items())
        if value and len(value) <= MAX_PROMPT_ATTRIBUTE_CHARS and not key.startswith("_")
    ]
    return ", ".join(items[:MAX_PROMPT_ATTRIBUTES])


def _blank(value: object) -> bool:
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


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        store = TemplateStore(args[0] if args else None)
    except TemplateError as exc:
        print(exc, file=sys.stderr)
        return 1
    problems = store.check_all(token_counter=clip_token_counter())
    for label, found in problems.items():
        for problem in found:
            print(f"{label}: {problem}", file=sys.stderr)
    total = sum(len(store.versions(i)) for i in store.ids())
    print(f"checked {total} template versions, {len(problems)} with problems")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
