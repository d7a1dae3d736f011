"""Reading a pipeline's topics directly, as the broker holds them: no consumer group, no commit.

The checker counts records here rather than trusting a stage's own account: a duplicate published
record is a second message on the topic whatever the files in storage look like.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from processors.config import Settings
from processors.job_states import LIFECYCLE, current_state
from processors.runtime.codec import Codec
from schemas.serde import SerdeError
from schemas.topics import Topic, TopicNames

_RANK = {state.value: i for i, state in enumerate(LIFECYCLE)}


# librdkafka reports every refused connection on stderr, and a chaos run refuses many on purpose.
_quiet = logging.getLogger("gateway.harness.chaos.rdkafka")
_quiet.propagate = False
_quiet.setLevel(logging.CRITICAL)
_quiet.addHandler(logging.NullHandler())


def _consumer(settings: Settings) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap,
            "logger": _quiet,
            "group.id": "lightbox.chaos-reader",  # never subscribes or commits: assign() only
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            # What the stages downstream see: a killed stage's aborted (or still open) outputs are
            # not records of the pipeline, and counting them would report duplicates that no reader
            # ever gets. librdkafka's default, said aloud.
            "isolation.level": "read_committed",
        }
    )


def read_topic(settings: Settings, topic: Topic, timeout_s: float = 60.0) -> list[Any]:
    """Every message now on the topic (all partitions, from the oldest offset up to the high
    watermark taken at the start), as confluent-kafka Messages."""
    name = TopicNames(settings.kafka.topic_prefix)(topic)
    consumer = _consumer(settings)
    try:
        metadata = consumer.list_topics(name, timeout=10).topics[name]
        ends: dict[int, int] = {}
        starts = []
        for partition in sorted(metadata.partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(name, partition), timeout=10)
            if high > low:
                ends[partition] = high
                starts.append(TopicPartition(name, partition, low))
        if not starts:
            return []
        consumer.assign(starts)
        messages: list[Any] = []
        done: set[int] = set()
        deadline = time.monotonic() + timeout_s
        while len(done) < len(ends):
            if time.monotonic() > deadline:
                missing = {p: ends[p] for p in ends if p not in done}
                raise TimeoutError(f"{name}: could not read up to the end offsets {missing} in {timeout_s}s")
            for message in consumer.consume(500, 1.0):
                error = message.error()
                partition = message.partition()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        done.add(partition)
                    continue
                if message.offset() < ends[partition]:
                    messages.append(message)
                if message.offset() >= ends[partition] - 1:
                    done.add(partition)
        return messages
    finally:
        consumer.close()


@dataclass
class JobEvent:
    event_id: str
    job_id: str
    stage: str
    state: str
    at_ms: int
    reason: str
    source: str = ""  # the input it came from (topic/partition/offset): tells replays apart


def in_order(events: list[JobEvent]) -> list[JobEvent]:
    """By time, ties broken by the lifecycle's order (as the event-log queries do)."""
    return sorted(events, key=lambda e: (e.at_ms, _RANK.get(e.state, -1)))


def state_of(events: list[JobEvent]) -> str:
    """A job's current state from its events, by the rule the event log applies."""
    return current_state(e.state for e in in_order(events))


@dataclass
class EventFeed:
    """pipeline.events followed from its first offset by a consumer of our own: how the run
    sees job states while the event-log sink itself is being killed."""

    settings: Settings
    events: dict[str, list[JobEvent]] = field(default_factory=dict)
    undecodable: int = 0

    def __post_init__(self) -> None:
        self._codec = Codec.of(self.settings)
        self._consumer = _consumer(self.settings)
        name = TopicNames(self.settings.kafka.topic_prefix)(Topic.PIPELINE_EVENTS)
        metadata = self._consumer.list_topics(name, timeout=10).topics[name]
        self._consumer.assign([TopicPartition(name, p, 0) for p in metadata.partitions])

    def poll(self, max_s: float = 1.0) -> int:
        """Take in what arrived; the number of events read."""
        count = 0
        deadline = time.monotonic() + max_s
        while time.monotonic() < deadline:
            batch = self._consumer.consume(500, 0.2)
            if not batch:
                break
            for message in batch:
                if message.error() is not None:
                    continue
                try:
                    value = self._codec.decode(message).value
                except SerdeError:
                    self.undecodable += 1
                    continue
                event = JobEvent(
                    str(value["event_id"]),
                    str(value["job_id"]),
                    str(value["stage"]),
                    str(value["state"]),
                    _millis(value["at"]),
                    str(value.get("reason") or ""),
                    str((value.get("attributes") or {}).get("source", "")),
                )
                self.events.setdefault(event.job_id, []).append(event)
                count += 1
        return count

    def state_of(self, job_id: str) -> str:
        return state_of(self.events.get(job_id, []))

    def close(self) -> None:
        self._consumer.close()


def _millis(value: Any) -> int:
    return int(value.timestamp() * 1000) if hasattr(value, "timestamp") else int(value)
