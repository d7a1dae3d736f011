"""A throwaway session's topics go when it is done (the bench deletes its own), and only its own:
another prefix's topics stay, and the unprefixed pipeline topics are never a target."""

from __future__ import annotations

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
