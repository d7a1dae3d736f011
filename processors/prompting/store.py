"""The template catalogue: every template under a directory, and which version a job gets.

A template lives at ``<root>/<id>/<version>.j2``. Published versions are immutable; a change is a
new version file, so a job's recorded (template_id, template_version) always names the exact
text that made its prompt. The store is also intake's catalogue (processors.intake's
TemplateCatalogue): which templates and versions exist is answered here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from processors.prompting.errors import TemplateError
from processors.prompting.naming import version_key
from processors.prompting.parsing import parse_template
from processors.prompting.rendering import PromptTemplate, RenderedPrompt

DEFAULT_TEMPLATE_DIR = Path(__file__).with_name("templates")


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
        """Oldest first, in semantic order."""
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

    def _by_id(self, template_id: str) -> dict[str, PromptTemplate]:
        try:
            return self._templates[template_id]
        except KeyError:
            raise TemplateError(
                "unknown_template", f"no template {template_id!r}; known: {self.ids()}"
            ) from None
