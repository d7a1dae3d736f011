"""Capped exponential backoff: the one rule every retry loop in Lightbox waits by."""

from __future__ import annotations


def backoff_delay(attempt: int, initial_s: float, max_s: float) -> float:
    """Seconds to wait before retry number `attempt` (1-based): initial, 2x, 4x, ... capped."""
    return float(min(max_s, initial_s * (2 ** max(0, attempt - 1))))
