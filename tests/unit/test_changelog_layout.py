"""The start-up layout check waits out a broker that is down (an outage, retried with capped
backoff and logged) and still fails at once on a real layout error."""

from __future__ import annotations

import logging
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from processors.state.layout import ChangelogLayout, ChangelogLayoutError, check_layout

INPUT, CHANGELOG = "t.catalog.events", "t.intake.seen"


@dataclass
class _Topic:
    partitions: dict[int, object]
    error: object = None


@dataclass
class _Metadata:
    topics: dict[str, _Topic]


@dataclass
class _Entry:
    value: str


@dataclass
class FakeAdmin:
    """An AdminClient whose first `failures` list_topics() calls fail like an unreachable broker."""

    counts: dict[str, int]
    failures: int = 0
    policy: str = "compact"
    calls: list[str] = field(default_factory=list)

    def list_topics(self, timeout: float = -1) -> _Metadata:
        self.calls.append("list_topics")
        if self.failures > 0:
            self.failures -= 1
            raise KafkaException(
                KafkaError(KafkaError._TRANSPORT, "Failed to get metadata: Local: Broker transport failure")
            )
        return _Metadata({n: _Topic({p: object() for p in range(c)}) for n, c in self.counts.items()})

    def describe_configs(self, resources: list[Any], request_timeout: float = -1) -> dict[Any, Future[Any]]:
        done: Future[Any] = Future()
        done.set_result({"cleanup.policy": _Entry(self.policy)})
        return {resources[0]: done}


def test_an_unreachable_broker_is_waited_for_with_backoff_until_it_answers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    admin = FakeAdmin({INPUT: 4, CHANGELOG: 4}, failures=2)
    waits: list[float] = []
    with caplog.at_level(logging.WARNING, "lightbox.state.layout"):
        layout = check_layout("broker:9092", INPUT, CHANGELOG, connect=lambda _: admin, sleep=waits.append)
    assert layout == ChangelogLayout(INPUT, CHANGELOG, 4)
    assert admin.calls == ["list_topics"] * 3
    assert waits == [1.0, 2.0]  # capped exponential backoff, one wait per failure
    unreachable = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(unreachable) == 2


def test_a_real_layout_error_still_fails_at_once() -> None:
    admin = FakeAdmin({INPUT: 4, CHANGELOG: 2})
    waits: list[float] = []
    with pytest.raises(ChangelogLayoutError, match="4 partitions but its changelog"):
        check_layout("broker:9092", INPUT, CHANGELOG, connect=lambda _: admin, sleep=waits.append)
    assert waits == []


def test_a_missing_topic_after_an_outage_is_still_a_configuration_error() -> None:
    admin = FakeAdmin({INPUT: 4}, failures=1)
    waits: list[float] = []
    with pytest.raises(ChangelogLayoutError, match="does not exist"):
        check_layout("broker:9092", INPUT, CHANGELOG, connect=lambda _: admin, sleep=waits.append)
    assert waits == [1.0]
