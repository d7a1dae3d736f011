"""Delivery failures are raised, never swallowed, and the DLQ reader never hangs: against the real
Kafka broker of the session's stack (tests/conftest.py)."""

from __future__ import annotations

import datetime as dt
import os
import time
import uuid

import pytest
from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from deploy.local.stack import LocalStack
from gateway.ops import dlq
from processors.config import Settings
from processors.kafka_clients import DeliveryFailed, make_producer, produce_and_confirm, producer_config
from processors.runtime.codec import Codec
from schemas.topics import Topic, TopicNames

pytestmark = pytest.mark.integration

TWO_MIB = 2 * 1024 * 1024


def _prefixed(settings: Settings, tag: str) -> Settings:
    kafka = settings.kafka.model_copy(update={"topic_prefix": f"test-{tag}-{uuid.uuid4().hex[:8]}."})
    return settings.model_copy(update={"kafka": kafka})


def _create(settings: Settings, topic: str, partitions: int = 1) -> None:
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap})
    for future in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        future.result(30)


_REGISTERED: set[str] = set()


def _letter(settings: Settings, original_topic: str, n: int) -> bytes:
    prefix = settings.kafka.topic_prefix
    if prefix not in _REGISTERED:  # the DLQ is registry-framed: its prefix's subjects first, once
        LocalStack(settings, progress=lambda _: None).ensure_schemas()
        _REGISTERED.add(prefix)
    now = dt.datetime.now(dt.UTC)
    return (
        Codec.of(settings)
        .serde(Topic.PIPELINE_DLQ)
        .encode(
            {
                "original_topic": original_topic,
                "original_partition": 0,
                "original_offset": n,
                "original_key": f"k{n}".encode(),
                "original_value": f"v{n}".encode(),
                "stage": "test",
                "error_class": "ValueError",
                "error_message": f"letter {n}",
                "attempts": 1,
                "first_failure_at": now,
                "last_failure_at": now,
            }
        )
    )


def test_oversized_message_refused_locally_raises(stack_settings: Settings) -> None:
    settings = _prefixed(stack_settings, "deliv")
    topic = TopicNames(settings.kafka.topic_prefix)(Topic.REVIEW_DECISIONS)
    _create(settings, topic)
    # The producer's own message.max.bytes (1 MB by default) refuses it before it is sent.
    with pytest.raises(DeliveryFailed, match=topic) as caught:
        produce_and_confirm(make_producer(settings), [(topic, b"k", os.urandom(TWO_MIB), None)])
    assert "too large" in str(caught.value).lower()


def test_message_the_broker_rejects_raises(stack_settings: Settings) -> None:
    settings = _prefixed(stack_settings, "deliv")
    topic = TopicNames(settings.kafka.topic_prefix)(Topic.REVIEW_DECISIONS)
    _create(settings, topic)
    # Allowed by this producer, refused by the broker (max.message.bytes ~1 MiB): the failure
    # arrives only as a delivery report, and flush() still returns 0.
    producer = Producer(producer_config(settings, **{"message.max.bytes": 4 * TWO_MIB}))
    small = (topic, b"ok", b"small", None)
    with pytest.raises(DeliveryFailed, match=topic) as caught:
        produce_and_confirm(producer, [small, (topic, b"big", os.urandom(TWO_MIB), None)], timeout_s=30)
    assert "1 of 2" in str(caught.value)
    assert "large" in str(caught.value).lower()
    # And everything delivered is counted.
    assert produce_and_confirm(producer, [small, small]) == 2


def test_dlq_replay_to_an_invalid_topic_raises(stack_settings: Settings) -> None:
    settings = _prefixed(stack_settings, "dlqrp")
    dlq_topic = TopicNames(settings.kafka.topic_prefix)(Topic.PIPELINE_DLQ)
    _create(settings, dlq_topic)
    bad_topic = "no such topic: spaces are not allowed"
    produce_and_confirm(make_producer(settings), [(dlq_topic, b"x", _letter(settings, bad_topic, 0), None)])
    with pytest.raises(DeliveryFailed, match="no such topic"):
        dlq.replay(settings, partition=0)


def _wait_for_high_watermark(settings: Settings, topic: str, high: int) -> None:
    """Transaction markers are written by the coordinator after commit/abort returns."""
    consumer = dlq._consumer(settings)
    try:
        deadline = time.monotonic() + 30
        while consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1] < high:
            assert time.monotonic() < deadline, f"{topic} never reached offset {high}"
            time.sleep(0.2)
    finally:
        consumer.close()


def _transactional(settings: Settings) -> Producer:
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap, "transactional.id": uuid.uuid4().hex})
    producer.init_transactions(30)
    producer.begin_transaction()
    return producer


def test_dlq_read_moves_past_a_trailing_transaction_marker(stack_settings: Settings) -> None:
    """The last offset holds no message, only a commit marker: reading used to wait for it forever."""
    settings = _prefixed(stack_settings, "dlqgap")
    dlq_topic = TopicNames(settings.kafka.topic_prefix)(Topic.PIPELINE_DLQ)
    _create(settings, dlq_topic)
    produce_and_confirm(make_producer(settings), [(dlq_topic, b"a", _letter(settings, "t", 0), None)])
    # A committed transaction: its letter at offset 1, its commit marker at offset 2.
    txn = _transactional(settings)
    txn.produce(dlq_topic, key=b"b", value=_letter(settings, "t", 1))
    txn.commit_transaction(30)
    _wait_for_high_watermark(settings, dlq_topic, 3)

    started = time.monotonic()
    letters = list(dlq.read(settings, partition=0, idle_timeout_s=20))
    assert [letter["dlq_offset"] for letter in letters] == [0, 1]
    assert [letter["original_offset"] for letter in letters] == [0, 1]
    # Left because the position passed the marker, not because the idle deadline ran out.
    assert time.monotonic() - started < 15


def test_dlq_read_moves_past_an_aborted_transaction(stack_settings: Settings) -> None:
    """Offsets 1 and 2 (an aborted letter and its abort marker) are never handed over."""
    settings = _prefixed(stack_settings, "dlqabort")
    dlq_topic = TopicNames(settings.kafka.topic_prefix)(Topic.PIPELINE_DLQ)
    _create(settings, dlq_topic)
    plain = make_producer(settings)
    produce_and_confirm(plain, [(dlq_topic, b"a", _letter(settings, "t", 0), None)])
    txn = _transactional(settings)
    txn.produce(dlq_topic, key=b"x", value=_letter(settings, "t", 99))
    txn.flush(30)
    txn.abort_transaction(30)
    _wait_for_high_watermark(settings, dlq_topic, 3)
    produce_and_confirm(plain, [(dlq_topic, b"c", _letter(settings, "t", 3), None)])

    letters = list(dlq.read(settings, partition=0, idle_timeout_s=20))
    assert [letter["dlq_offset"] for letter in letters] == [0, 3]
    # A range that ends inside the gap finishes too, and one inside it yields nothing.
    assert [letter["dlq_offset"] for letter in dlq.read(settings, partition=0, end=2)] == [0]
    assert list(dlq.read(settings, partition=0, start=1, end=2, idle_timeout_s=20)) == []
