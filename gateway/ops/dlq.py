"""SRE tools for pipeline.dlq: list dead letters, and replay them to their original topics.

Replay re-produces the original key and bytes to the original topic, so the failing stage sees the
message again exactly as it first did (after the fix is deployed). Replayed messages carry a
``lightbox.replayed-from`` header naming the dead letter they came from.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterator
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from processors.config import Settings
from processors.kafka_clients import Message, make_producer, produce_and_confirm
from processors.runtime.codec import Codec
from processors.runtime.dlq import dead_letter_key, parse_headers
from processors.storage import ObjectStore
from schemas.topics import Topic, TopicNames

log = logging.getLogger(__name__)

# A partition whose next offset yields nothing for this long is left (the offset was deleted by
# retention, or the broker is unreachable): reading never hangs.
IDLE_TIMEOUT_S = 30.0


def _consumer(settings: Settings) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap,
            "group.id": "lightbox.dlq-tool",
            "enable.auto.commit": False,
            # Letters of an aborted transaction (a stage killed mid-batch) were never written for
            # the pipeline; replaying one would redo a record its successor already handled.
            "isolation.level": "read_committed",
            # An offset deleted meanwhile (retention) resumes at the oldest one left.
            "auto.offset.reset": "earliest",
        }
    )


def read(
    settings: Settings,
    partition: int | None = None,
    start: int | None = None,
    end: int | None = None,
    limit: int | None = None,
    idle_timeout_s: float = IDLE_TIMEOUT_S,
) -> Iterator[dict[str, Any]]:
    """Dead letters in offset order per partition, each with its dlq partition and offset.

    Offsets may have gaps (compaction, retention, transaction markers): a partition is done once
    the consumer's position passes the last offset asked for, or when nothing arrives for
    idle_timeout_s (logged as a warning)."""
    topic = TopicNames(settings.kafka.topic_prefix)(Topic.PIPELINE_DLQ)
    consumer = _consumer(settings)
    serde = Codec.of(settings).serde(Topic.PIPELINE_DLQ)
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
            progress_at = time.monotonic()
            while position <= last:
                messages = consumer.consume(100, 1.0)
                for message in messages:
                    if message.error() or message.partition() != p or message.offset() < position:
                        continue
                    position = message.offset() + 1
                    progress_at = time.monotonic()
                    if message.offset() > last:
                        break
                    letter = serde.decode(message.value())
                    letter["dlq_headers"] = parse_headers(list(message.headers() or []))
                    letter["dlq_partition"] = p
                    letter["dlq_offset"] = message.offset()
                    yield letter
                    yielded += 1
                    if limit is not None and yielded >= limit:
                        return
                if not messages:
                    # The consumer's position moves past offsets that hold no message for us
                    # (transaction markers, compacted records) without handing anything over.
                    (tp,) = consumer.position([TopicPartition(topic, p)])
                    if tp.offset > position:
                        position = tp.offset
                        progress_at = time.monotonic()
                if position <= last and time.monotonic() - progress_at > idle_timeout_s:
                    log.warning(
                        "dlq %s/%d: nothing at offset %d within %.0fs (last asked: %d); leaving it",
                        topic,
                        p,
                        position,
                        idle_timeout_s,
                        last,
                    )
                    break
            consumer.unassign()
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
    """Re-produce the dead letters; raises DeliveryFailed unless the broker acknowledged all."""

    store: ObjectStore | None = None

    def messages() -> Iterator[Message]:
        nonlocal store
        for letter in read(settings, partition=partition, start=start, end=end):
            origin = f"dlq/{letter['dlq_partition']}/{letter['dlq_offset']}".encode()
            key, value = letter.get("original_key"), letter.get("original_value")
            if value is None and letter["dlq_headers"].get("original.ref"):
                store = store or ObjectStore(settings.storage)
                key, value = _stored_original(store, letter, key)
            yield (letter["original_topic"], key, value, [("lightbox.replayed-from", origin)])

    return produce_and_confirm(make_producer(settings), messages())


def _stored_original(
    store: ObjectStore, letter: dict[str, Any], key: bytes | None
) -> tuple[bytes | None, bytes]:
    """The original of a letter too large to carry it, from the object its pointer names (the
    `dlq.original.ref` header), proven by the `dlq.original.sha256` header; a key too long for
    the letter lies beside it (dead_letter_key's `key` part)."""
    headers = letter["dlq_headers"]
    ref = headers["original.ref"]
    prefix = f"s3://{store.bucket}/"
    if not ref.startswith(prefix):
        raise ValueError(f"dead letter points at {ref}, outside this stack's bucket {store.bucket}")
    value = store.get_checked(ref[len(prefix) :], headers.get("original.sha256") or None)
    if key is None:
        key_object = dead_letter_key(
            letter["original_topic"],
            letter["original_partition"],
            letter["original_offset"],
            letter["stage"],
            "key",
        )
        try:
            key = store.get_bytes(key_object)
        except Exception as exc:  # no key object: the original had no key (or a short one)
            if "NoSuchKey" not in f"{type(exc).__name__} {exc}":
                raise
    return key, value
