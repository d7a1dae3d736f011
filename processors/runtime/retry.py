"""The one retry loop: call, and on failure wait by the backoff rule and call again.

Both handler shapes go through it. A Stage's record is retried on its own, and a permanent error
(bad data, a bug on this input) or the last attempt ends it: the caller dead-letters that record.
A BatchStage's whole batch is retried as one call and never counts as permanent (a whole batch
failing means a dependency is down, not that every record is poison), so on the last attempt the
caller lets the error propagate: nothing is committed and a restart resumes from the last commit.
The loop itself knows neither shape; callers pass what counts as permanent and what to record.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from processors.backoff import backoff_delay
from processors.config import StageSettings
from processors.runtime.records import now_ms

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    initial_s: float
    max_s: float

    @classmethod
    def of(cls, settings: StageSettings) -> RetryPolicy:
        return cls(settings.max_attempts, settings.backoff_initial_s, settings.backoff_max_s)

    def delay(self, attempt: int) -> float:
        return backoff_delay(attempt, self.initial_s, self.max_s)


@dataclass
class Succeeded(Generic[T]):
    value: T
    attempts: int
    # How long the successful call took (the failed ones and the waits are not counted).
    duration_ms: float


@dataclass
class GaveUp:
    error: BaseException
    attempts: int
    permanent: bool
    first_failure_ms: int  # epoch millis
    last_failure_ms: int


# Told about each failure that will be retried: (attempt number, the error, seconds until the next).
OnRetry = Callable[[int, BaseException, float], None]


async def with_retries(
    call: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    is_permanent: Callable[[BaseException], bool],
    on_retry: OnRetry,
) -> Succeeded[T] | GaveUp:
    """Run `call` until it returns, a permanent error, or `policy.max_attempts` attempts."""
    first_failure: int | None = None
    attempt = 0
    while True:
        attempt += 1
        started = time.perf_counter()
        try:
            value = await call()
        except Exception as exc:
            failed_at = now_ms()
            first_failure = first_failure or failed_at
            permanent = is_permanent(exc)
            if permanent or attempt >= policy.max_attempts:
                return GaveUp(exc, attempt, permanent, first_failure, failed_at)
            delay = policy.delay(attempt)
            on_retry(attempt, exc, delay)
            await asyncio.sleep(delay)
            continue
        return Succeeded(value, attempt, (time.perf_counter() - started) * 1000)
