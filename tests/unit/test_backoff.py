"""One backoff rule (processors/backoff.py): the reference fetcher and the remote backend wait by it,
each with the jitter its callers need."""

from __future__ import annotations

import random

import pytest

from gpu_workers.backends.remote import RemoteBackend, RemoteConfig, _Retryable
from processors.backoff import backoff_delay, jittered_delay
from processors.references.fetcher import ReferenceFetcher
from processors.references.url_policy import FetchPolicy


def test_jitter_stays_between_the_floor_and_the_step() -> None:
    rng = random.Random(1)
    for attempt in range(1, 8):
        step = backoff_delay(attempt, 0.2, 5.0)
        draws = [jittered_delay(attempt, 0.2, 5.0, floor=0.5, rng=rng) for _ in range(200)]
        assert all(0.5 * step <= d <= step for d in draws)
        assert max(draws) - min(draws) > 0.2 * step  # it really spreads


def test_a_floor_of_one_is_the_plain_step() -> None:
    assert jittered_delay(3, 0.2, 5.0, floor=1.0) == backoff_delay(3, 0.2, 5.0) == pytest.approx(0.8)


@pytest.mark.parametrize("floor", [-0.1, 1.5])
def test_a_floor_outside_zero_to_one_is_refused(floor: float) -> None:
    with pytest.raises(ValueError):
        jittered_delay(1, 0.2, 5.0, floor=floor)


def test_the_fetcher_waits_at_least_half_the_capped_step() -> None:
    fetcher = ReferenceFetcher(FetchPolicy(backoff_initial_s=0.1, backoff_max_s=0.5))
    for attempt in range(6):  # the fetcher counts failed attempts from 0
        step = backoff_delay(attempt + 1, 0.1, 0.5)
        assert all(0.5 * step <= fetcher._backoff(attempt) <= step for _ in range(50))
    assert fetcher._backoff(10) <= 0.5


def test_the_remote_backend_uses_full_jitter_unless_the_server_says_when() -> None:
    backend = RemoteBackend(RemoteConfig("http://127.0.0.1:9", backoff_initial_s=0.1, backoff_max_s=0.4))
    for attempt in range(1, 6):
        step = backoff_delay(attempt, 0.1, 0.4)
        assert all(0.0 <= backend._backoff(attempt, None) <= step for _ in range(50))
    assert backend._backoff(1, _Retryable("429", retry_after_s=0.3)) == 0.3
    assert backend._backoff(1, _Retryable("429", retry_after_s=30.0)) == 0.4  # capped
