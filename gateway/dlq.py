"""SRE tools for pipeline.dlq: list dead letters, and replay them to their original topics.

Replay re-produces the original key and bytes to the original topic, so the failing stage sees the
message again exactly as it first did (after the fix is deployed). Replayed messages carry a
``lightbox.replayed-from`` header naming the dead letter they came from.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from processors.config import Settings
from processors.kafka_clients import make_producer
from schemas.serde import AvroSerde
from schemas.topics import Topic, TopicNames


def _consumer(settings: Settings) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap,
            "group.id": "lightbox.dlq-tool",
            "enable.auto.commit": False,
        }
    )


def read(
    settings: Settings,
    partition: int | None = None,
    start: int | None = None,
    end: int | None = None,
    limit: int | None = None,
) -> Iterator[dict[str, Any]]:
    """Dead letters in offset order per partition, each with its dlq partition and offset."""
    topic = TopicNames(settings.kafka.topic_prefix)(Topic.PIPELINE_DLQ)
    consumer = _consumer(settings)
    serde = AvroSerde("dlq_envelope")
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        partitions = sorted(metadata.partitions) if partition is None else [partition]
        yielded = 0
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            first = max(low, start if start is not None else low)
            last = min(high - 1, end if end is not None else high - 1)
            if first > last:
                continue
            consumer.assign([TopicPartition(topic, p, first)])
            position = first
            while position <= last:
                for message in consumer.consume(100, 2.0):
                    if message.error() or message.offset() > last:
                        continue
                    position = message.offset() + 1
                    letter = serde.decode(message.value())
                    letter["dlq_partition"] = p
                    letter["dlq_offset"] = message.offset()
                    yield letter
                    yielded += 1
                    if limit is not None and yielded >= limit:
                        return
    finally:
        consumer.close()


def describe(letter: dict[str, Any]) -> str:
    first = letter["first_failure_at"]
    when = first.isoformat() if isinstance(first, dt.datetime) else first
    key = (letter.get("original_key") or b"").decode("utf-8", "replace")
    return (
        f"dlq {letter['dlq_partition']}/{letter['dlq_offset']}: {letter['original_topic']}/"
        f"{letter['original_partition']}/{letter['original_offset']} key={key} stage={letter['stage']} "
        f"attempts={letter['attempts']} first={when} {letter['error_class']}: {letter['error_message'][:200]}"
    )


def replay(
    settings: Settings, partition: int | None = None, start: int | None = None, end: int | None = None
) -> int:
    producer = make_producer(settings)
    count = 0
    for letter in read(settings, partition=partition, start=start, end=end):
        producer.produce(
            letter["original_topic"],
            key=letter.get("original_key"),
            value=letter.get("original_value"),
            headers=[
                ("lightbox.replayed-from", f"dlq/{letter['dlq_partition']}/{letter['dlq_offset']}".encode())
            ],
        )
        producer.poll(0)
        count += 1
    if producer.flush(30):
        raise RuntimeError("some replayed messages were not delivered")
    return count
