"""A poison message lands in pipeline.dlq with its context, and its partition keeps flowing."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from deploy.local.session import expected_job_ids
from gateway.ops.dlq import read as read_dlq
from processors.runtime.dlq import parse_headers
from schemas.topics import Topic
from tests.support.catalog import events_for

pytestmark = pytest.mark.integration


def _dlq_headers_for(
    settings, topic: str, partition: int, offset: int, timeout_s: float = 60
) -> dict[str, str]:
    name = settings.kafka.topic_prefix + Topic.PIPELINE_DLQ.value
    consumer = Consumer(
        {"bootstrap.servers": settings.kafka.bootstrap, "group.id": "t", "enable.auto.commit": False}
    )
    try:
        parts = consumer.list_topics(name, timeout=10).topics[name].partitions
        consumer.assign([TopicPartition(name, p, 0) for p in parts])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for message in consumer.consume(100, 1.0):
                if message.error():
                    continue
                headers = parse_headers(message.headers())
                if (
                    headers.get("original.topic"),
                    headers.get("original.partition"),
                    headers.get("original.offset"),
                ) == (topic, str(partition), str(offset)):
                    return headers
        raise AssertionError(f"no dead letter for {topic}/{partition}/{offset}")
    finally:
        consumer.close()


def test_poison_message_is_dead_lettered_and_partition_keeps_flowing(pipeline, catalog_server) -> None:
    settings = pipeline.settings
    topic = settings.kafka.topic_prefix + Topic.CATALOG_EVENTS.value
    events = events_for(catalog_server, [2], "dlq")
    sku = events[0]["product"]["sku"]
    (job_id,) = expected_job_ids(events)

    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap})
    delivered = {}
    # Same key (the SKU) as the good event behind it: same partition, so it would block it.
    producer.produce(
        topic,
        key=sku.encode(),
        value=b"\x00not avro at all",
        on_delivery=lambda err, msg: delivered.update(p=msg.partition(), o=msg.offset()),
    )
    producer.flush(10)
    pipeline.submit(events)

    headers = _dlq_headers_for(settings, topic, delivered["p"], delivered["o"])
    assert headers["stage"] == "intake"
    assert headers["error.class"] == "SerdeError"
    assert "not known to the registry" in headers["error.message"]  # 0x00 then a 4-byte id nobody registered
    assert headers["original.key"] == sku
    assert int(headers["attempts"]) >= 1
    assert int(headers["first.failure.ms"]) <= int(headers["last.failure.ms"])

    letters = [
        letter
        for letter in read_dlq(settings, partition=None)
        if letter["original_offset"] == delivered["o"] and letter["original_topic"] == topic
    ]
    assert letters and letters[0]["original_value"] == b"\x00not avro at all"

    states = pipeline.wait_for([job_id], timeout_s=120)
    assert states.get(job_id) == "published"
