"""Parsing a template file: YAML front matter (the contract) plus a Jinja2 body (the prompt)::

    ---
    id: studio-hero
    version: 1.0.0
    description: ...
    scene: studio            # one of processors.prompting.scenes.SCENE_NAMES
    lighting: soft key light from the left
    brand_constraints: [no competitor logos, product colours unaltered]
    negative_prompt: blurry, watermark, {{ brand }} misspelled
    variables:
      - {name: product_title, required: true, description: ..., example: Steel kettle}
    ---
    {{ product_title | words(12) }}, professional studio photograph, {{ lighting }}

Every problem is a TemplateError("invalid_template") naming the file and the key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import jinja2
import yaml

from processors.prompting.errors import TemplateError
from processors.prompting.naming import TEMPLATE_ID, TEMPLATE_VERSION
from processors.prompting.rendering import CONTEXT_NAMES, DROPPED_KEY, PromptTemplate, Variable, environment
from processors.prompting.scenes import SCENE_NAMES

# Not declarable: context names, and the key to_record() adds to the recorded variables.
_RESERVED = CONTEXT_NAMES | {DROPPED_KEY}
_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)", re.DOTALL)


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
    env = environment()
    try:
        return PromptTemplate(
            id=_meta_str(meta, "id", source, pattern=TEMPLATE_ID),
            version=_meta_str(meta, "version", source, pattern=TEMPLATE_VERSION),
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
    if scene not in SCENE_NAMES:
        raise TemplateError(
            "invalid_template", f"{source}: scene {scene!r} is not one of {list(SCENE_NAMES)}"
        )
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
