"""Fail over between backends by policy.

The routing decision gives each request an ordered list of (backend, model) choices: the primary
first, then fallbacks. A choice is skipped when its backend is unknown, its circuit is open, or it
raises BackendUnavailable; any other exception is about the request itself (bad input, OOM) and
propagates so the worker can split the batch or fail the item. The outcome says which choice
served and, when it was not the primary, which backend it fell back from, for the job's lineage.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from gpu_workers.backends.base import (
    Backend,
    BackendUnavailable,
    GeneratedImage,
    GenerationItem,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Choice:
    backend: str
    model: str


@dataclass(frozen=True)
class SkippedChoice:
    choice: Choice
    reason: str


@dataclass
class FailoverOutcome:
    results: list[GeneratedImage]
    served_by: Choice
    fell_back_from: str | None  # the primary backend's name when a fallback served
    skipped: list[SkippedChoice] = field(default_factory=list)


class AllBackendsUnavailable(BackendUnavailable):
    def __init__(self, skipped: list[SkippedChoice]) -> None:
        detail = "; ".join(f"{s.choice.backend}/{s.choice.model}: {s.reason}" for s in skipped)
        super().__init__(f"no backend could serve: {detail or 'no choices given'}")
        self.skipped = skipped


def as_choices(pairs: Sequence[Choice | tuple[str, str]]) -> list[Choice]:
    return [p if isinstance(p, Choice) else Choice(*p) for p in pairs]


class FailoverGenerator:
    def __init__(self, backends: Mapping[str, Backend]) -> None:
        self.backends = dict(backends)

    async def generate(
        self, items: list[GenerationItem], choices: Sequence[Choice | tuple[str, str]]
    ) -> FailoverOutcome:
        """Serve items with the first choice that can; all items share the same choice list.

        The worker groups by (choices, primary batch key) so a batch never mixes policies.
        """
        ordered = as_choices(choices)
        skipped: list[SkippedChoice] = []
        for index, choice in enumerate(ordered):
            backend = self.backends.get(choice.backend)
            if backend is None:
                skipped.append(SkippedChoice(choice, "backend not configured"))
                continue
            if _circuit_open(backend):
                skipped.append(SkippedChoice(choice, "circuit open"))
                continue
            try:
                results = await backend.generate(_for_model(items, choice.model))
            except BackendUnavailable as exc:
                log.warning("backend %s/%s unavailable: %s", choice.backend, choice.model, exc)
                skipped.append(SkippedChoice(choice, str(exc) or type(exc).__name__))
                continue
            fell_back_from = ordered[0].backend if index > 0 else None
            for result in results:
                result.extra.setdefault("backend", choice.backend)
                if fell_back_from is not None:
                    result.extra["fell_back_from"] = fell_back_from
            return FailoverOutcome(results, choice, fell_back_from, skipped)
        raise AllBackendsUnavailable(skipped)


def _circuit_open(backend: Backend) -> bool:
    breaker = getattr(backend, "breaker", None)
    return bool(breaker is not None and breaker.is_open)


def _for_model(items: list[GenerationItem], model: str) -> list[GenerationItem]:
    # A fallback runs its own model; the rest of the request (prompt, seed, size) is unchanged.
    return [
        item
        if item.params.model == model
        else dataclasses.replace(item, params=dataclasses.replace(item.params, model=model))
        for item in items
    ]
