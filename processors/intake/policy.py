"""The intake policy: field limits, allow-lists and policy terms, as data (policy.yaml).

Loading checks the file itself (unknown keys, wrong types, invalid patterns) and fails with
:class:`PolicyError`, so a broken policy stops intake at start-up instead of rejecting everything.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from processors.intake.terms import RestrictedTerms, normalise_use

DEFAULT_POLICY_PATH = Path(__file__).with_name("policy.yaml")


class PolicyError(ValueError):
    """The policy file itself is invalid."""


@dataclass(frozen=True)
class IntakePolicy:
    """Every value comes from the policy file: policy.yaml is the one place the limits are written
    (and documented), so the fields have no defaults here to drift from it."""

    version: str
    max_title_chars: int
    max_sku_chars: int
    max_text_chars: int  # event_id, source, brand, category, campaign, template id and version
    max_text_overlay_chars: int
    max_attributes: int
    max_attribute_key_chars: int
    max_attribute_value_chars: int
    max_references: int
    max_url_chars: int
    min_size: int
    max_size: int
    size_multiple: int
    max_variants: int
    min_priority: int
    max_priority: int
    max_jobs_per_event: int
    sku_pattern: str
    reference_schemes: tuple[str, ...]
    asset_types: tuple[str, ...]
    unsupported_asset_types: tuple[str, ...]
    channels: tuple[str, ...]
    locale_pattern: str
    locales: tuple[str, ...]  # empty: any locale matching locale_pattern
    restricted_terms: tuple[str, ...]
    unsupported_uses: tuple[str, ...]
    use_attribute_keys: tuple[str, ...]
    restricted: RestrictedTerms = field(init=False, repr=False, compare=False)
    _uses: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("sku_pattern", "locale_pattern"):
            try:
                re.compile(getattr(self, name))
            except re.error as exc:
                raise PolicyError(f"policy {name} is not a valid regex: {exc}") from exc
        if self.max_jobs_per_event < 1 or self.max_attributes < 0:
            raise PolicyError("policy limits must be positive")
        object.__setattr__(self, "restricted", RestrictedTerms(self.restricted_terms))
        object.__setattr__(self, "_uses", frozenset(map(normalise_use, self.unsupported_uses)))

    @classmethod
    def load(cls, path: str | Path | None = None) -> IntakePolicy:
        """The shipped policy, or the shipped policy with the keys of the file at path replacing
        its own (a site's file names only what it changes)."""
        data = _read(DEFAULT_POLICY_PATH)
        if path is not None and Path(path) != DEFAULT_POLICY_PATH:
            data.update(_read(Path(path)))
        return cls.from_dict(data, source=str(path or DEFAULT_POLICY_PATH))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "policy") -> IntakePolicy:
        """A policy from every key, flat or with the limits in a ``limits`` mapping."""
        flat = _flatten(data, source)
        types = {f.name: _FIELD_TYPES[f.name] for f in fields(cls) if f.init}
        unknown = sorted(set(flat) - set(types))
        if unknown:
            raise PolicyError(f"{source}: unknown policy keys {unknown}")
        missing = sorted(set(types) - set(flat))
        if missing:
            raise PolicyError(f"{source}: missing policy keys {missing}")
        kwargs: dict[str, Any] = {}
        for name, value in flat.items():
            kind = types[name]
            if kind is tuple:
                if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
                    raise PolicyError(f"{source}: {name} must be a list of strings")
                kwargs[name] = tuple(value)
            elif kind is int:
                if not isinstance(value, int) or isinstance(value, bool):
                    raise PolicyError(f"{source}: {name} must be an integer")
                kwargs[name] = value
            else:
                kwargs[name] = str(value)
        return cls(**kwargs)

    def is_unsupported_use(self, value: str) -> bool:
        return normalise_use(value) in self._uses

    def locale_allowed(self, locale: str) -> bool:
        if self.locales:
            return locale in self.locales
        return re.fullmatch(self.locale_pattern, locale) is not None


_FIELD_TYPES: dict[str, type] = {
    name: getattr(hint, "__origin__", hint) for name, hint in get_type_hints(IntakePolicy).items()
}


def _read(file: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise PolicyError(f"cannot read intake policy {file}: {exc}") from exc
    return _flatten(data, str(file))


def _flatten(data: Any, source: str) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise PolicyError(f"{source}: the top level must be a mapping")
    flat = dict(data)
    limits = flat.pop("limits", None) or {}
    if not isinstance(limits, Mapping):
        raise PolicyError(f"{source}: limits must be a mapping")
    flat.update(limits)
    return flat
