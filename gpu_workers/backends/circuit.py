"""A circuit breaker: stop calling a backend that keeps failing, probe it again after a cool-down.

closed  -- calls flow; consecutive failures are counted, a success resets the count.
open    -- after ``failure_threshold`` consecutive failures: calls are refused at once (the caller
           fails over instead of waiting on timeouts) until ``reset_timeout_s`` has passed.
half-open -- after the cool-down exactly one trial call is let through; success closes the
           circuit, failure opens it for another cool-down.

The cool-down is fixed, not processors.backoff's growing delay, on purpose: the breaker does not
wait, it refuses, and the caller fails over to another backend meanwhile, so probing a
recovered backend late costs throughput and probing a dead one early costs only one call.
Retries within a call wait by processors.backoff (remote.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from enum import StrEnum

from gpu_workers.backends.base import BackendUnavailable


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitOpenError(BackendUnavailable):
    """Refused without calling: the circuit is open."""


class CircuitBreaker:
    def __init__(
        self,
        failure_threshold: int = 5,
        reset_timeout_s: float = 30.0,
        *,
        name: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        self.failure_threshold = failure_threshold
        self.reset_timeout_s = reset_timeout_s
        self.name = name
        self._clock = clock
        self._lock = threading.Lock()
        self._state = CircuitState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_started: float | None = None

    @property
    def state(self) -> CircuitState:
        with self._lock:
            return self._current_state()

    @property
    def is_open(self) -> bool:
        """True while calls would be refused (open, or half-open with its trial in flight)."""
        with self._lock:
            state = self._current_state()
            return state is CircuitState.OPEN or (state is CircuitState.HALF_OPEN and self._trial_in_flight())

    @property
    def consecutive_failures(self) -> int:
        with self._lock:
            return self._failures

    def allow(self) -> bool:
        """May a call go out now? In half-open, only the first caller gets True (the trial)."""
        with self._lock:
            state = self._current_state()
            if state is CircuitState.CLOSED:
                return True
            if state is CircuitState.OPEN or self._trial_in_flight():
                return False
            self._trial_started = self._clock()
            return True

    def check(self) -> None:
        """Raise CircuitOpenError unless a call may go out now."""
        if not self.allow():
            label = f" {self.name!r}" if self.name else ""
            raise CircuitOpenError(f"circuit{label} is open; backend skipped")

    def record_success(self) -> None:
        with self._lock:
            self._state = CircuitState.CLOSED
            self._failures = 0
            self._trial_started = None

    def record_failure(self) -> None:
        with self._lock:
            state = self._current_state()
            self._failures += 1
            if state is CircuitState.HALF_OPEN or self._failures >= self.failure_threshold:
                self._state = CircuitState.OPEN
                self._opened_at = self._clock()
                self._trial_started = None

    def _current_state(self) -> CircuitState:
        if self._state is CircuitState.OPEN and self._clock() - self._opened_at >= self.reset_timeout_s:
            self._state = CircuitState.HALF_OPEN
            self._trial_started = None
        return self._state

    def _trial_in_flight(self) -> bool:
        # A trial whose caller vanished (cancelled, never reported) must not wedge the breaker
        # half-open forever: after one more cool-down another trial may go.
        return self._trial_started is not None and self._clock() - self._trial_started < self.reset_timeout_s
