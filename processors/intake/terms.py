"""Policy terms: whole-word matching of restricted terms, and the normal form of a declared use.

The restricted-term matcher is shared: intake checks the request's text with it, and prompt
rendering checks the rendered prompt with the same matcher, so a term means one thing everywhere.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache


class RestrictedTerms:
    """Case-insensitive whole-word matcher for a list of terms (one compiled regex for all)."""

    def __init__(self, terms: Iterable[str]) -> None:
        cleaned = sorted({" ".join(t.split()).casefold() for t in terms if t and t.strip()})
        self.terms: tuple[str, ...] = tuple(cleaned)
        self._pattern = _compile_terms(self.terms) if self.terms else None

    def find(self, text: str | None) -> list[str]:
        """The distinct terms found in text, lower-cased, in order of first appearance."""
        if not text or self._pattern is None:
            return []
        seen: dict[str, None] = {}
        for match in self._pattern.finditer(text):
            seen.setdefault(" ".join(match.group(0).split()).casefold(), None)
        return list(seen)

    def __bool__(self) -> bool:
        return bool(self.terms)


@lru_cache(maxsize=32)
def _compile_terms(terms: tuple[str, ...]) -> re.Pattern[str]:
    # Longest first so "miracle cure" wins over "cure"; lookarounds instead of \b so terms that
    # start or end with punctuation ("risk-free", "#1") still match as whole words.
    alternatives = [
        r"\s+".join(re.escape(word) for word in term.split()) for term in sorted(terms, key=len, reverse=True)
    ]
    return re.compile(r"(?<!\w)(?:" + "|".join(alternatives) + r")(?!\w)", re.IGNORECASE)


def as_restricted_terms(terms: RestrictedTerms | Iterable[str]) -> RestrictedTerms:
    """A matcher for terms given either way; a plain list is compiled once per distinct list."""
    if isinstance(terms, RestrictedTerms):
        return terms
    return _cached(tuple(terms))


@lru_cache(maxsize=16)
def _cached(terms: tuple[str, ...]) -> RestrictedTerms:
    return RestrictedTerms(terms)


def normalise_use(value: str) -> str:
    return re.sub(r"[\s-]+", "_", value.strip().casefold())
