"""confluent-kafka clients: the factories with the settings every stage relies on, and the one
produce loop that the stage runner and the gateway's tools send through: Delivery (produce, then
a delivery report per message, resendable) and produce_and_confirm (all of it, or DeliveryFailed).

A failed delivery is one of two things, and callers treat them apart:
- the record itself was refused (RECORD_ERROR_CODES: too large, invalid, a bad timestamp):
  sending it again fails again, so the stage dead-letters what it came from;
- anything else (the broker unreachable, a timeout, no leader): the same message is sent again
  once the broker is back, for as long as that takes.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer

from processors.config import Settings

# How long a consumer may go between polls before the group throws it out. Anything that must
# finish within one batch (a stage's retries) is bounded by it: import it, do not repeat it.
MAX_POLL_INTERVAL_MS = 300_000

log = logging.getLogger(__name__)


def producer_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    return {
        "bootstrap.servers": settings.kafka.bootstrap,
        # Idempotent producer: a retried send never duplicates a message within a session.
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "lz4",
        "client.id": f"lightbox-{socket.gethostname()}",
        # The runner checks every output against this same limit before producing it.
        "message.max.bytes": settings.stage.max_message_bytes,
        **extra,
    }


# Classic-protocol properties that librdkafka refuses with group.protocol=consumer (KIP-848): the
# broker owns the session timeout, the heartbeat and the assignment there.
CLASSIC_ONLY = ("session.timeout.ms", "heartbeat.interval.ms", "partition.assignment.strategy")


def consumer_config(settings: Settings, group_id: str, **extra: Any) -> dict[str, Any]:
    """The one consumer configuration of every stage (and their state restores)."""
    config = {
        "bootstrap.servers": settings.kafka.bootstrap,
        "group.id": group_id,
        "group.protocol": settings.kafka.group_protocol,
        # Offsets are committed by the runner after the batch's outputs are delivered.
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": settings.stage.session_timeout_ms,
        "max.poll.interval.ms": MAX_POLL_INTERVAL_MS,
        "partition.assignment.strategy": "cooperative-sticky",
        # librdkafka's default too, said aloud: an aborted or still open transaction's records
        # (a killed stage's outputs) are never handed to a stage.
        "isolation.level": "read_committed",
        # An idle consumer's fetch waits this long at the broker, which answers it as soon as a
        # committed record arrives; any other request of this consumer waits behind it (one
        # connection), so the feed asks the broker nothing on the way (runtime/feed.py).
        "fetch.wait.max.ms": settings.kafka.fetch_wait_max_ms,
        "client.id": f"lightbox-{group_id}-{socket.gethostname()}",
        **extra,
    }
    if config["group.protocol"] == "consumer":
        for name in CLASSIC_ONLY:
            config.pop(name, None)
    return config


def share_group_stages(settings: Settings) -> frozenset[str]:
    """The stages that read as a share group: the consumer-group API (offsets, lag, describe)
    neither lists nor describes such a group, and its members hold no partitions."""
    return frozenset({"generate"}) if settings.generation.consumption == "share" else frozenset()


def share_consumer_config(settings: Settings, group_id: str, **extra: Any) -> dict[str, Any]:
    """A share group member (KIP-932) that acknowledges each record itself (runtime/share_feed.py).
    Where to start and what a member may read are the group's configs (share_group_configs)."""
    return {
        "bootstrap.servers": settings.kafka.bootstrap,
        "group.id": group_id,
        "share.acknowledgement.mode": "explicit",
        # A poll is a batch: every record of it is acknowledged before the next poll, so it is
        # one generation batch (a soft cap: the broker hands over whole produced batches), all
        # of which must be done within the record lock (generation.share_lock_s).
        "max.poll.records": settings.generation.max_batch,
        "max.poll.interval.ms": MAX_POLL_INTERVAL_MS,
        "fetch.wait.max.ms": settings.kafka.fetch_wait_max_ms,
        "client.id": f"lightbox-{group_id}-{socket.gethostname()}",
        **extra,
    }


def share_group_configs(settings: Settings) -> dict[str, str]:
    """The share group's own configs: a share group starts at the log end and reads uncommitted
    records unless told otherwise, and the broker's delivery count limit sits one above ours, so
    the stage dead-letters a record before the broker archives it unseen."""
    return {
        "share.auto.offset.reset": "earliest",
        "share.isolation.level": "read_committed",
        "share.delivery.count.limit": str(settings.generation.share_max_deliveries + 1),
        "share.record.lock.duration.ms": str(int(settings.generation.share_lock_s * 1000)),
    }


def prepare_share_group(settings: Settings, group_id: str, timeout_s: float = 10.0) -> None:
    """Set the group's configs (share_group_configs) before any member joins; idempotent."""
    from confluent_kafka.admin import (
        AdminClient,
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
        ResourceType,
    )

    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap})
    entries = [
        ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)
        for name, value in share_group_configs(settings).items()
    ]
    resource = ConfigResource(ResourceType.GROUP, group_id, incremental_configs=entries)
    for future in admin.incremental_alter_configs([resource], request_timeout=timeout_s).values():
        future.result(timeout=timeout_s)


def make_share_consumer(settings: Settings, group_id: str, **extra: Any) -> Any:
    from confluent_kafka import ShareConsumer

    return ShareConsumer(share_consumer_config(settings, group_id, **extra))


def make_producer(settings: Settings, **extra: Any) -> Producer:
    return Producer(producer_config(settings, **extra))


def transactional_id_for(settings: Settings, stage: str) -> str:
    """One per stage copy, the same after a restart: a new producer with it fences the old one
    and aborts what that one left open. Zombies of another generation of the group are fenced by
    send_offsets_to_transaction (KIP-447), so the id need not follow the partitions."""
    # Without a copy name nothing is stable across restarts anyway; the random part keeps two
    # runners of one stage in one process (tests, benchmarks) from fencing each other.
    copy = settings.kafka.instance or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    return f"{group_id_for(settings, stage)}.{copy}"


def transactional_producer_config(settings: Settings, stage: str, **extra: Any) -> dict[str, Any]:
    return producer_config(
        settings,
        **{
            "transactional.id": transactional_id_for(settings, stage),
            "transaction.timeout.ms": settings.kafka.transaction_timeout_ms,
            **extra,
        },
    )


def make_transactional_producer(settings: Settings, stage: str, **extra: Any) -> Producer:
    return Producer(transactional_producer_config(settings, stage, **extra))


def make_consumer(settings: Settings, group_id: str, **extra: Any) -> Consumer:
    return Consumer(consumer_config(settings, group_id, **extra))


def group_id_for(settings: Settings, stage: str) -> str:
    return f"{settings.kafka.topic_prefix}lightbox.{stage}"


# (topic, key, value, headers): one message for produce_and_confirm, partitioned by key.
Message = tuple[str, bytes | None, bytes | None, Sequence[tuple[str, bytes]] | None]

# Delivery errors about the record itself (librdkafka's local refusals and the broker's per-record
# answers): resending the same bytes cannot succeed.
RECORD_ERROR_CODES: frozenset[int] = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,  # larger than message.max.bytes (producer or broker)
        KafkaError.RECORD_LIST_TOO_LARGE,  # a batch over the broker's limit: only ever ours alone
        KafkaError.INVALID_RECORD,  # the broker's validation refused the record
        KafkaError.INVALID_MSG,  # CORRUPT_MESSAGE: failed the broker's CRC or format check
        KafkaError.INVALID_MSG_SIZE,
        KafkaError.INVALID_TIMESTAMP,  # outside the topic's message.timestamp.difference.max.ms
        KafkaError._BAD_MSG,  # librdkafka: a malformed message
        KafkaError._INVALID_ARG,  # librdkafka: an argument of this message it cannot take
    }
)


def is_record_error(code: int) -> bool:
    return code in RECORD_ERROR_CODES


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
    """Messages were not delivered; the message names the topic(s) and the broker's error.
    `per_record` is true when every failure was a refusal of the record itself."""

    def __init__(self, message: str, errors: Sequence[KafkaError] = ()) -> None:
        super().__init__(message)
        self.errors = list(errors)
        self.per_record = bool(self.errors) and all(is_record_error(e.code()) for e in self.errors)


# A message not yet sent, or sent and not yet reported on.
_UNSENT = object()
_IN_FLIGHT = object()


class Delivery:
    """Messages produced through one producer, each with its own delivery report.

    send() produces (all, or the ones named); wait() serves delivery reports until each message
    sent has one or the timeout passes. A message the producer refused on the spot (too large, a
    full queue for too long) is reported at once as failed with that error. Thread-safe enough for
    its use: reports arrive on the thread that calls wait() (librdkafka serves callbacks in
    poll/flush)."""

    def __init__(self, producer: Any, messages: Iterable[Message | Outgoing]) -> None:
        self.producer = producer
        self.messages = [m if isinstance(m, Outgoing) else Outgoing(*m) for m in messages]
        self._status: list[object] = [_UNSENT] * len(self.messages)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.messages)

    def _report(self, index: int, err: KafkaError | None, _msg: Any) -> None:
        with self._lock:
            self._status[index] = err

    def send(self, indexes: Iterable[int] | None = None, queue_full_s: float = 30.0) -> None:
        """Produce the messages (all, or these), replacing any earlier report they had. A local
        queue that stays full for `queue_full_s` (all of them together) fails the rest."""
        deadline = time.monotonic() + queue_full_s
        for index in range(len(self.messages)) if indexes is None else indexes:
            out = self.messages[index]
            extra = {} if out.partition is None else {"partition": out.partition}
            with self._lock:
                self._status[index] = _IN_FLIGHT
            while True:
                try:
                    self.producer.produce(
                        out.topic,
                        key=out.key,
                        value=out.value,
                        headers=list(out.headers or []),
                        on_delivery=functools.partial(self._report, index),
                        **extra,
                    )
                    break
                except BufferError:
                    # Local queue full: serve delivery reports to make room, within the deadline.
                    if time.monotonic() >= deadline:
                        self._report(index, KafkaError(KafkaError._QUEUE_FULL, "producer queue full"), None)
                        break
                    self.producer.poll(0.1)
                except KafkaException as exc:
                    # Refused before it left this process (e.g. larger than message.max.bytes).
                    error = exc.args[0] if exc.args else None
                    if not isinstance(error, KafkaError):
                        error = KafkaError(KafkaError._FAIL, str(exc))
                    self._report(index, error, None)
                    break
            self.producer.poll(0)

    def wait(self, timeout_s: float) -> bool:
        """Serve reports until every message sent has one, or `timeout_s`; True if none is left."""
        deadline = time.monotonic() + timeout_s
        while self.in_flight():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            # flush() returns once this producer's whole queue is empty (other callers' messages
            # too), so it is bounded by small steps and the own reports are checked in between.
            self.producer.flush(min(remaining, 0.5))
        return True

    def _where(self, wanted: Any) -> list[int]:
        with self._lock:
            return [i for i, s in enumerate(self._status) if wanted(s)]

    def in_flight(self) -> list[int]:
        return self._where(lambda s: s is _IN_FLIGHT)

    def unsent(self) -> list[int]:
        return self._where(lambda s: s is _UNSENT)

    def delivered(self) -> list[int]:
        return self._where(lambda s: s is None)

    def failures(self) -> list[tuple[int, KafkaError]]:
        with self._lock:
            return [(i, s) for i, s in enumerate(self._status) if isinstance(s, KafkaError)]


def produce_and_confirm(
    producer: Producer, messages: Iterable[Message | Outgoing], timeout_s: float = 30.0
) -> int:
    """Produce every message, wait for the broker to acknowledge each, and raise DeliveryFailed
    unless all of them were delivered. Returns the number of messages delivered.

    The gateway's tools (submit, review, DLQ replay) and the state changelogs send through it; the
    stage runner uses Delivery directly, to resend what failed. flush() alone is not enough: a
    message that failed (rejected by the broker, timed out) leaves the queue too, so flush()
    returns 0 for it; only the delivery report says it failed."""
    delivery = Delivery(producer, messages)
    started = time.monotonic()
    delivery.send(queue_full_s=timeout_s)
    count = len(delivery)
    topics = sorted({m.topic for m in delivery.messages})
    done = delivery.wait(max(0.0, timeout_s - (time.monotonic() - started)))
    failures = delivery.failures()
    if failures:
        errors = [error for _, error in failures]
        index, first = failures[0]
        topic = delivery.messages[index].topic
        if first.code() == KafkaError._QUEUE_FULL:
            raise DeliveryFailed(
                f"producer queue stayed full for {timeout_s}s; {count - len(failures)} message(s) queued for "
                f"{', '.join(topics)}",
                errors,
            )
        by_topic = sorted({delivery.messages[i].topic for i, _ in failures})
        if len(failures) == 1 and not delivery.delivered() and count == 1:
            raise DeliveryFailed(f"could not produce to {topic}: {first.str()}", errors)
        raise DeliveryFailed(
            f"{len(failures)} of {count} message(s) not delivered to {', '.join(by_topic)}: {first.str()}",
            errors,
        )
    if not done:
        remaining = len(delivery.in_flight())
        raise DeliveryFailed(
            f"{remaining} of {count} message(s) to {', '.join(topics)} still undelivered after {timeout_s}s"
        )
    return count


def topic_message_limits(
    settings: Settings, topics: Iterable[str], timeout_s: float = 10.0
) -> dict[str, int]:
    """The broker's max.message.bytes of each topic (topics it does not describe are left out)."""
    from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap})
    resources = [ConfigResource(ResourceType.TOPIC, name) for name in topics]
    limits: dict[str, int] = {}
    if not resources:
        return limits
    for resource, future in admin.describe_configs(resources, request_timeout=timeout_s).items():
        try:
            entry = future.result(timeout=timeout_s).get("max.message.bytes")
        except Exception as exc:  # a missing topic, an unreachable broker: keep the producer's limit
            log.warning("could not read max.message.bytes of %s: %s", resource.name, exc)
            continue
        if entry is not None and entry.value is not None:
            limits[resource.name] = int(entry.value)
    return limits
