"""Sending the fuzz cases, and accounting for every one of them afterwards.

Each message is tracked by where the broker put it (topic, partition, offset). Afterwards it is
accounted for as
- dead-lettered: a letter on pipeline.dlq names that topic/partition/offset (its dlq.* headers);
- processed: it decodes, and a pipeline event names it as its source (the runtime stamps every
  event with `source` = topic/partition/offset of the input it came from), or, for a pipeline
  event itself, the event log now holds its event id;
- unaccounted otherwise: dropped silently, or still stuck behind a stage that cannot move on.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, Producer
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from gateway.harness.chaos.topics import read_topic
from processors.config import Settings
from processors.eventlog.reader import EventLogReader
from processors.runtime.codec import Codec
from processors.runtime.dlq import parse_headers
from schemas.serde import SerdeError
from schemas.topics import Topic, TopicNames
from tests.fuzz.payloads import Case, build


def broker_message_limit(settings: Settings, topic: Topic) -> int:
    """The largest record batch the broker takes on this topic: the topic's max.message.bytes
    (which defaults to the broker's message.max.bytes), the smaller of the two."""
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap})
    name = TopicNames(settings.kafka.topic_prefix)(topic)
    broker = str(next(iter(admin.list_topics(timeout=10).brokers)))
    resources = [ConfigResource(ResourceType.TOPIC, name), ConfigResource(ResourceType.BROKER, broker)]
    limits = []
    for resource, future in admin.describe_configs(resources).items():
        entries = future.result(timeout=30)
        key = "max.message.bytes" if resource.restype == ResourceType.TOPIC else "message.max.bytes"
        limits.append(int(entries[key].value))
    return min(limits)


@dataclass(frozen=True)
class Sent:
    case: Case
    topic: Topic
    partition: int
    offset: int
    size: int
    value: dict[str, Any] | None  # as the stage's decoder reads it; None: undecodable

    @property
    def source(self) -> str:
        """How the runtime names this input in its events' `source` attribute."""
        return f"{self.topic.value}/{self.partition}/{self.offset}"

    def describe(self) -> str:
        return f"{self.source} ({self.case.kind}, {self.size} bytes, seed {self.case.seed})"


class FuzzProducer:
    """Produces cases as they are drawn; delivery is confirmed in confirm()."""

    def __init__(self, settings: Settings, limit: int) -> None:
        self.settings = settings
        self.limit = limit
        self.topics = TopicNames(settings.kafka.topic_prefix)
        self.codec = Codec.of(settings)
        self._producer = Producer(
            {
                "bootstrap.servers": settings.kafka.bootstrap,
                "message.max.bytes": limit,
                # Sizes as drawn reach the broker: no compression shrinks them under its limit.
                "compression.type": "none",
                "linger.ms": 5,
            }
        )
        self._pending: list[tuple[Case, Topic, int, dict[str, Any] | None]] = []
        self._delivered: dict[int, tuple[int, int]] = {}
        self._failed: list[str] = []

    def send(self, case: Case) -> None:
        index = len(self._pending)
        value = build(case, self.codec, f"fuzz-{index}", self.limit)
        self._pending.append((case, case.topic, len(value or b""), self._decode(case.topic, value)))

        def delivered(err: KafkaError | None, msg: Any, index: int = index) -> None:
            if err is not None:
                self._failed.append(f"{case}: {err.str()}")
            else:
                self._delivered[index] = (msg.partition(), msg.offset())

        self._producer.produce(
            self.topics(case.topic),
            key=case.key,
            value=value,
            headers=list(case.headers),
            on_delivery=delivered,
        )
        self._producer.poll(0)

    def confirm(self, timeout_s: float = 60.0) -> list[Sent]:
        """Wait for the broker to take every message; a refused one is the fuzzer's own bug."""
        left = self._producer.flush(timeout_s)
        if left or self._failed:
            raise AssertionError(f"{left} undelivered, refused: {self._failed[:3]}")
        return [
            Sent(case, topic, *self._delivered[i], size, value)
            for i, (case, topic, size, value) in enumerate(self._pending)
        ]

    def _decode(self, topic: Topic, value: bytes | None) -> dict[str, Any] | None:
        try:
            return self.codec.serde(topic).decode(value)
        except SerdeError:
            return None


@dataclass
class Accounting:
    dead_lettered: list[Sent] = field(default_factory=list)
    processed: list[Sent] = field(default_factory=list)
    unaccounted: list[Sent] = field(default_factory=list)
    letters_without_reason: list[str] = field(default_factory=list)
    letter_classes: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return len(self.dead_lettered) + len(self.processed) + len(self.unaccounted)


def account(settings: Settings, sent: list[Sent]) -> Accounting:
    names = TopicNames(settings.kafka.topic_prefix)
    codec = Codec.of(settings)
    letters: dict[tuple[str, str, str], dict[str, str]] = {}
    result = Accounting()
    for message in read_topic(settings, Topic.PIPELINE_DLQ):
        headers = parse_headers(message.headers())
        where = (
            headers.get("original.topic", ""),
            headers.get("original.partition", ""),
            headers.get("original.offset", ""),
        )
        letters[where] = headers
        result.letter_classes[headers.get("error.class", "")] += 1
        if not headers.get("error.class") or not headers.get("error.message"):
            result.letters_without_reason.append("/".join(where))
    sources: set[str] = set()
    for message in read_topic(settings, Topic.PIPELINE_EVENTS):
        try:
            event = codec.decode(message).value
        except SerdeError:
            continue  # a fuzzed event that never decoded: accounted for by its own letter
        source = (event.get("attributes") or {}).get("source")
        if source:
            sources.add(source)
    logged = _event_ids_in_log(
        settings, [s.value["event_id"] for s in sent if s.topic is Topic.PIPELINE_EVENTS and s.value]
    )
    for s in sent:
        if (names(s.topic), str(s.partition), str(s.offset)) in letters:
            result.dead_lettered.append(s)
        elif s.value is not None and (
            s.source in sources if s.topic is not Topic.PIPELINE_EVENTS else s.value["event_id"] in logged
        ):
            result.processed.append(s)
        else:
            result.unaccounted.append(s)
    return result


def _event_ids_in_log(settings: Settings, ids: list[str]) -> set[str]:
    if not ids:
        return set()
    table = f"{settings.clickhouse.database}.pipeline_events"
    found: set[str] = set()

    async def query() -> None:
        async with EventLogReader(settings) as reader:
            for start in range(0, len(ids), 50):
                # By hex: a fuzzed id may hold quotes or a ';', which the analyst endpoint refuses.
                hexed = ",".join(f"'{i.encode().hex().upper()}'" for i in ids[start : start + 50])
                rows = await reader.sql(f"SELECT event_id FROM {table} WHERE hex(event_id) IN ({hexed})")
                found.update(row[0] for row in rows["rows"])

    asyncio.run(query())
    return found
