"""Capped exponential backoff: the one rule every retry loop in Lightbox waits by."""

from __future__ import annotations

import random


def backoff_delay(attempt: int, initial_s: float, max_s: float) -> float:
    """Seconds to wait before retry number `attempt` (1-based): initial, 2x, 4x, ... capped."""
    return float(min(max_s, initial_s * (2 ** max(0, attempt - 1))))


def jittered_delay(
    attempt: int,
    initial_s: float,
    max_s: float,
    *,
    floor: float = 0.0,
    rng: random.Random | None = None,
) -> float:
    """``backoff_delay`` scaled by a random factor in [floor, 1].

    For callers whose retries meet other callers' retries at one shared dependency (a remote
    API, a CDN): without jitter they would all come back in lockstep. ``floor`` 0 is "full
    jitter" (spreads load best); a higher floor keeps a minimum wait. A stage's own retry loop
    (processors.runtime) waits without jitter: it retries one partition's batch, alone.
    """
    if not 0.0 <= floor <= 1.0:
        raise ValueError(f"floor must be in [0, 1], got {floor}")
    factor = (rng or random).uniform(floor, 1.0)
    return backoff_delay(attempt, initial_s, max_s) * factor
