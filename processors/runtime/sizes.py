"""How large a message may be, and clipping text so runtime records stay bounded.

Every encoded output, pipeline event and dead letter is checked here before it is produced: a
message over the limit would be refused (by librdkafka at once, or by the broker in the delivery
report), and the runner dead-letters its input instead of sending it.

Two limits apply and the smaller wins:
- the producer's message.max.bytes (stage.max_message_bytes; kafka_clients.producer_config
  passes the same value to librdkafka), checked by librdkafka on each message as
  key + value + headers + RECORD_OVERHEAD, exactly as wire_size() counts;
- the broker's max.message.bytes of the topic (read from the broker when the runner starts),
  which counts a whole record batch: a batch header, and compression that can grow random bytes a
  little. A record is sent in a batch of its own at worst, so the topic's limit is shrunk by both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from processors.kafka_clients import Outgoing

# librdkafka's RD_KAFKAP_MESSAGE_V2_MAX_OVERHEAD: what it adds to key, value and headers when it
# checks a message against message.max.bytes.
RECORD_OVERHEAD = 36
# A v2 record batch header, counted by the broker's max.message.bytes.
BATCH_OVERHEAD = 61
# lz4 frames and varints can make incompressible bytes a little larger than they were.
COMPRESSION_SLACK = 0.99


def wire_size(message: Outgoing) -> int:
    """The size librdkafka checks against message.max.bytes."""
    headers = sum(len(name.encode()) + len(value or b"") + 10 for name, value in message.headers or [])
    return RECORD_OVERHEAD + len(message.key or b"") + len(message.value or b"") + headers


@dataclass
class MessageLimits:
    producer_max: int
    # Per broker topic name: the broker's max.message.bytes, where it is known.
    broker_max: dict[str, int] = field(default_factory=dict)

    def learn(self, limits: Mapping[str, int]) -> None:
        self.broker_max.update(limits)

    def limit(self, topic: str) -> int:
        broker = self.broker_max.get(topic)
        if broker is None:
            return self.producer_max
        return min(self.producer_max, int((broker - BATCH_OVERHEAD) * COMPRESSION_SLACK))

    def fits(self, message: Outgoing) -> bool:
        return wire_size(message) <= self.limit(message.topic)


@dataclass(frozen=True)
class TextLimits:
    """Bounds on what the runtime writes into events and dead letters, whatever a handler put in
    them (a reviewer's 1 MB reason must not make the event itself unsendable)."""

    job_id: int = 512
    reason: int = 200
    detail: int = 2000
    attributes: int = 32  # entries
    attribute_key: int = 100
    attribute_value: int = 1000
    error_message: int = 4000
    header_value: int = 1000
    # A dead letter carries the original key inline up to this size; a larger one is stored too.
    inline_key: int = 16 * 1024


TEXT = TextLimits()


def clip(text: str, limit: int) -> str:
    """At most `limit` characters; a clipped text says how much was cut."""
    if len(text) <= limit:
        return text
    note = f"... [{len(text) - limit} more characters]"
    return text[: max(0, limit - len(note))] + note


def clip_attributes(attributes: Mapping[str, str]) -> dict[str, str]:
    items = list(attributes.items())[: TEXT.attributes]
    return {clip(str(k), TEXT.attribute_key): clip(str(v), TEXT.attribute_value) for k, v in items}
