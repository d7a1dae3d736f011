"""confluent-kafka clients: the factories with the settings every stage relies on, and the one
produce loop (produce_and_confirm) that the stage runner and the gateway's tools send through."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer

from processors.config import Settings


def producer_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    return {
        "bootstrap.servers": settings.kafka.bootstrap,
        # Idempotent producer: a retried send never duplicates a message within a session.
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "lz4",
        "client.id": f"lightbox-{socket.gethostname()}",
        **extra,
    }


def consumer_config(settings: Settings, group_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "bootstrap.servers": settings.kafka.bootstrap,
        "group.id": group_id,
        # Offsets are committed by the runner after the batch's outputs are delivered.
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": settings.stage.session_timeout_ms,
        "max.poll.interval.ms": 300000,
        "partition.assignment.strategy": "cooperative-sticky",
        "client.id": f"lightbox-{group_id}-{socket.gethostname()}",
        **extra,
    }


def make_producer(settings: Settings, **extra: Any) -> Producer:
    return Producer(producer_config(settings, **extra))


def make_consumer(settings: Settings, group_id: str, **extra: Any) -> Consumer:
    return Consumer(consumer_config(settings, group_id, **extra))


def group_id_for(settings: Settings, stage: str) -> str:
    return f"{settings.kafka.topic_prefix}lightbox.{stage}"


# (topic, key, value, headers): one message for produce_and_confirm, partitioned by key.
Message = tuple[str, bytes | None, bytes | None, Sequence[tuple[str, bytes]] | None]


@dataclass(frozen=True)
class Outgoing:
    """One message for produce_and_confirm as a record; unlike the tuple, it can name a partition."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] | None = None
    # None: partitioned by key. Set only for state changelogs co-partitioned with an input.
    partition: int | None = None


class DeliveryFailed(RuntimeError):
    """Messages were not delivered; the message names the topic(s) and the broker's error."""


def produce_and_confirm(
    producer: Producer, messages: Iterable[Message | Outgoing], timeout_s: float = 30.0
) -> int:
    """Produce every message, wait for the broker to acknowledge each, and raise DeliveryFailed
    unless all of them were delivered. Returns the number of messages delivered.

    The one produce loop: the stage runner's outbox and the gateway's tools (submit, review, DLQ
    replay) all send through it. flush() alone is not enough: a message that failed (rejected by
    the broker, timed out) leaves the queue too, so flush() returns 0 for it; only the delivery
    report says it failed."""
    failures: list[tuple[str, str]] = []

    def on_delivery(err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            failures.append((msg.topic() or "?", err.str()))

    deadline = time.monotonic() + timeout_s
    count = 0
    topics: set[str] = set()
    for message in messages:
        out = message if isinstance(message, Outgoing) else Outgoing(*message)
        topics.add(out.topic)
        extra = {} if out.partition is None else {"partition": out.partition}
        while True:
            try:
                producer.produce(
                    out.topic,
                    key=out.key,
                    value=out.value,
                    headers=list(out.headers or []),
                    on_delivery=on_delivery,
                    **extra,
                )
                break
            except BufferError:
                # Local queue full: serve delivery reports to make room, within the deadline.
                if time.monotonic() >= deadline:
                    raise DeliveryFailed(
                        f"producer queue stayed full for {timeout_s}s; {count} message(s) queued for "
                        f"{', '.join(sorted(topics))}"
                    ) from None
                producer.poll(0.1)
            except KafkaException as exc:
                # Refused before it left this process (e.g. larger than message.max.bytes).
                error = exc.args[0]
                detail = error.str() if isinstance(error, KafkaError) else str(error)
                producer.flush(max(0.0, deadline - time.monotonic()))
                raise DeliveryFailed(f"could not produce to {out.topic}: {detail}") from exc
        producer.poll(0)
        count += 1
    remaining = producer.flush(max(0.0, deadline - time.monotonic()))
    if failures:
        by_topic = sorted({topic for topic, _ in failures})
        raise DeliveryFailed(
            f"{len(failures)} of {count} message(s) not delivered to {', '.join(by_topic)}: {failures[0][1]}"
        )
    if remaining:
        raise DeliveryFailed(
            f"{remaining} of {count} message(s) to {', '.join(sorted(topics))} still undelivered after "
            f"{timeout_s}s"
        )
    return count
