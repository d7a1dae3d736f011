"""The policy terms of a request: restricted terms in its text, and uses the pipeline does not
serve (by category, by declared use, by an attribute flag). Shape and size are checked before
these run; each takes only values that passed those checks."""

from __future__ import annotations

import re
from collections.abc import Mapping

from processors.intake.fields import FieldChecker, attribute_path
from processors.intake.terms import normalise_use

# Attribute values that mean "no" when an attribute names a use ({"weapons": "no"} is fine).
_FALSY = frozenset({"", "0", "false", "no", "none", "n/a", "off"})
_USE_SPLIT = re.compile(r"[,;/|]")


def check_category(c: FieldChecker, category: str | None) -> None:
    if category and c.policy.is_unsupported_use(category):
        c.reject("unsupported_use", "product.category", f"category {category!r} is not served")


def check_declared_uses(c: FieldChecker, attrs: Mapping[str, str]) -> None:
    use_keys = {normalise_use(k) for k in c.policy.use_attribute_keys}
    for key, value in attrs.items():
        if normalise_use(key) in use_keys:
            for use in _USE_SPLIT.split(value):
                if use.strip() and c.policy.is_unsupported_use(use):
                    c.reject(
                        "unsupported_use",
                        attribute_path(key),
                        f"use {use.strip()!r} is not served",
                    )
        elif c.policy.is_unsupported_use(key) and normalise_use(value) not in _FALSY:
            c.reject("unsupported_use", attribute_path(key), f"use {key!r} is not served")


def is_unsupported_asset_type(c: FieldChecker, asset_type: str) -> bool:
    """An asset type people ask for that this pipeline does not make (not a typo)."""
    return asset_type in c.policy.unsupported_asset_types or c.policy.is_unsupported_use(asset_type)


def check_restricted(
    c: FieldChecker, title: str | None, attrs: Mapping[str, str] | None, overlay: str | None
) -> None:
    terms = c.policy.restricted
    if not terms:
        return
    texts: list[tuple[str, str | None]] = [("product.title", title), ("request.text_overlay", overlay)]
    texts += [(attribute_path(k), v) for k, v in (attrs or {}).items()]
    for path, text in texts:
        found = terms.find(text)
        if found:
            c.reject("restricted_term", path, f"contains restricted term(s): {', '.join(found)}")
