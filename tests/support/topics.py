"""Reading a topic back in a test: every message up to its end offsets when called."""

from __future__ import annotations

import time
import uuid

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from processors.config import Settings
from schemas.topics import Topic, TopicNames


def read_topic(settings: Settings, topic: Topic, timeout_s: float = 30.0) -> list[Message]:
    """All of ``topic`` (with the settings' prefix) from offset 0 to the ends seen at the start.

    A fresh group and no commits, so reading never moves another reader's position; stops at
    the ends taken up front, so a topic still being written does not keep it reading.
    """
    name = TopicNames(settings.kafka.topic_prefix)(topic)
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
            # What a stage downstream sees: committed transactions only. The end offset is then
            # often a transaction's commit marker, never handed over: the partition's EOF says
            # it was reached.
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
        }
    )
    try:
        parts = consumer.list_topics(name, timeout=10).topics[name].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(name, p), timeout=10)[1] for p in parts}
        consumer.assign([TopicPartition(name, p, 0) for p in parts])
        found: list[Message] = []
        done = {p for p, end in ends.items() if end == 0}
        deadline = time.monotonic() + timeout_s
        while len(done) < len(ends) and time.monotonic() < deadline:
            for message in consumer.consume(100, 0.5):
                if message.error():
                    if message.error().code() == KafkaError._PARTITION_EOF:
                        done.add(message.partition())
                    continue
                found.append(message)
                if message.offset() + 1 >= ends[message.partition()]:
                    done.add(message.partition())
        return found
    finally:
        consumer.close()
