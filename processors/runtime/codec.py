"""Bytes to records and back: one serde per schema, looked up by the topic a message is on.

Decoding an input raises SerdeError for anything that is not a record of its topic's schema; the
runner dead-letters such a message at once (retrying cannot make bytes decode).
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import Message

from processors.runtime.records import InputRecord
from schemas.serde import AvroSerde
from schemas.topics import SCHEMA_OF, Topic, TopicNames


class Codec:
    def __init__(self, topics: TopicNames) -> None:
        self.topics = topics
        self._serdes: dict[str, AvroSerde] = {}

    def serde(self, schema: str) -> AvroSerde:
        if schema not in self._serdes:
            self._serdes[schema] = AvroSerde(schema)
        return self._serdes[schema]

    def encode(self, topic: Topic, value: dict[str, Any]) -> bytes:
        return self.serde(SCHEMA_OF[topic]).encode(value)

    def decode(self, message: Message) -> InputRecord:
        topic = self.topics.logical(str(message.topic()))
        raw = message.value()
        value = self.serde(SCHEMA_OF[topic]).decode(raw)
        return InputRecord(
            topic=topic,
            partition=int(message.partition() or 0),
            offset=int(message.offset() or 0),
            key=message.key(),
            value=value,
            raw_value=raw or b"",
            headers=list(message.headers() or []),
            timestamp_ms=message.timestamp()[1],
        )
