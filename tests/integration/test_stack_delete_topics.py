"""A throwaway session's topics go when it is done (the bench deletes its own), and only its own:
another prefix's topics stay, and the unprefixed pipeline topics are never a target."""

from __future__ import annotations

import contextlib
import time
import uuid

import pytest

from deploy.local.kafka import admin_client
from deploy.local.stack import LocalStack
from processors.config import Settings
from schemas.topics import TopicNames

pytestmark = pytest.mark.integration


def _stack(stack_settings: Settings, prefix: str) -> LocalStack:
    settings = stack_settings.model_copy(
        update={"kafka": stack_settings.kafka.model_copy(update={"topic_prefix": prefix, "partitions": 1})}
    )
    return LocalStack(settings, progress=lambda _: None)


def _topics(stack_settings: Settings) -> set[str]:
    return set(admin_client(stack_settings.kafka.bootstrap).list_topics(timeout=10).topics)


def test_deletes_its_prefix_topics_and_no_others(stack_settings: Settings) -> None:
    run = uuid.uuid4().hex[:6]
    doomed, kept = f"del-{run}-a.", f"del-{run}-b."
    _stack(stack_settings, doomed).ensure_topics()
    _stack(stack_settings, kept).ensure_topics()

    deleted = _stack(stack_settings, doomed).delete_topics(doomed)

    assert sorted(deleted) == sorted(TopicNames(doomed).all())
    deadline = time.monotonic() + 30
    while set(deleted) & _topics(stack_settings) and time.monotonic() < deadline:
        time.sleep(0.5)  # deletion is asynchronous on the broker
    remaining = _topics(stack_settings)
    assert not set(deleted) & remaining
    assert set(TopicNames(kept).all()) <= remaining
    # Nothing left to delete: nothing deleted, no error.
    assert _stack(stack_settings, doomed).delete_topics(doomed) == []
    _stack(stack_settings, kept).delete_topics(kept)


def test_refuses_the_unprefixed_topics(stack_settings: Settings) -> None:
    with pytest.raises(ValueError, match="unprefixed"):
        LocalStack(stack_settings, progress=lambda _: None).delete_topics("")


def test_a_test_session_deletes_the_topics_it_created_and_only_those(stack_settings: Settings) -> None:
    """tests/support/created_topics.py, which the session's stack_settings runs under: what this
    process created goes at the end; a topic another client made meanwhile stays."""
    from confluent_kafka import KafkaException, Producer
    from confluent_kafka.admin import NewTopic

    from tests.support.created_topics import deleted_at_exit

    run = uuid.uuid4().hex[:6]
    ours, theirs, raced = f"tidy-{run}-ours", f"tidy-{run}-theirs", f"tidy-{run}-raced"
    bootstrap = stack_settings.kafka.bootstrap
    admin = admin_client(bootstrap)
    # Made by another process before we ask for it: our create fails "already exists".
    for future in admin.create_topics([NewTopic(raced, 1, 1)]).values():
        future.result()
    try:
        with deleted_at_exit(bootstrap) as created:
            for future in admin.create_topics([NewTopic(ours, 1, 1)]).values():
                future.result()
            for future in admin.create_topics([NewTopic(raced, 1, 1)]).values():
                with pytest.raises(KafkaException):
                    future.result()
            # Made by someone else: the broker creates it on first produce, no create_topics here.
            producer = Producer({"bootstrap.servers": bootstrap, "allow.auto.create.topics": True})
            producer.produce(theirs, b"x")
            assert producer.flush(30) == 0
            assert created == {ours}
        deadline = time.monotonic() + 30
        while ours in _topics(stack_settings) and time.monotonic() < deadline:
            time.sleep(0.5)
        remaining = _topics(stack_settings)
        assert ours not in remaining
        assert {theirs, raced} <= remaining
    finally:
        for future in admin.delete_topics([theirs, raced]).values():
            with contextlib.suppress(KafkaException):
                future.result()
