"""Bytes to records and back: one serde per topic, from the process's serde factory.

Every topic carries Confluent-framed Avro through the schema registry (schemas/confluent_serde.py):
the factory is the process's ConfluentSerdes (one registry client, one id cache), or the
in-process registry's (`memory_serdes`) for stages run on the in-memory broker.

Decoding an input raises SerdeError for anything that is not a record of its topic's schema (no
Confluent frame, an id the registry does not know, another schema's record); the runner
dead-letters such a message at once (retrying cannot make bytes decode). A registry that cannot
answer raises RegistryUnavailableError, a ConnectionError: a dependency fault, never the message's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

from confluent_kafka import Message

from processors.config import Settings
from processors.runtime.records import InputRecord
from schemas.confluent_serde import serdes_for
from schemas.topics import Topic, TopicNames


class TopicSerde(Protocol):
    def encode(self, record: dict[str, Any]) -> bytes: ...

    def decode(self, payload: bytes | None) -> dict[str, Any]: ...

    def writer_fields(self) -> set[str]: ...


SerdeFactory = Callable[[Topic], TopicSerde]


def serde_factory(settings: Settings) -> SerdeFactory:
    """The configured registry's serdes under the settings' topic prefix."""
    return serdes_for(settings.registry, settings.kafka.topic_prefix)


class Codec:
    def __init__(self, topics: TopicNames, serdes: SerdeFactory) -> None:
        self.topics = topics
        self._factory = serdes
        self._serdes: dict[Topic, TopicSerde] = {}

    @classmethod
    def of(cls, settings: Settings) -> Codec:
        return cls(TopicNames(settings.kafka.topic_prefix), serde_factory(settings))

    def serde(self, topic: Topic) -> TopicSerde:
        found = self._serdes.get(topic)
        if found is None:
            found = self._serdes[topic] = self._factory(topic)
        return found

    def encode(self, topic: Topic, value: dict[str, Any]) -> bytes:
        return self.serde(topic).encode(value)

    def resolve_writers(self, topics: Iterable[Topic]) -> None:
        """Look up the version each topic's records are written in now, at start: the registry
        round trips and schema parsing then happen before the first batch, not inside it (a
        burst's first records would wait on them). As with a first encode, the version found is
        the one this process writes until it restarts. Raises as encode would."""
        for topic in topics:
            self.serde(topic).writer_fields()

    def decode(self, message: Message) -> InputRecord:
        topic = self.topics.logical(str(message.topic()))
        raw = message.value()
        value = self.serde(topic).decode(raw)
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
