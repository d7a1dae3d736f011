"""A set of seen keys backed by a compacted changelog topic.

The changelog is partitioned like the input topic and keyed the same way, so the consumer that owns
input partition P owns changelog partition P. On every assignment the table re-reads the assigned
changelog partitions to their end, so a consumer that takes over a partition also takes over
what its previous owner had seen. In-memory alone would forget on restart; this does not.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from processors.config import Settings
from processors.kafka_clients import make_consumer
from schemas.serde import AvroSerde, SerdeError

log = logging.getLogger(__name__)


class SeenTable:
    def __init__(self, settings: Settings, changelog_topic: str) -> None:
        self.settings = settings
        self.topic = changelog_topic
        self.serde = AvroSerde("seen_event")
        self._seen: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._pending_partitions: set[int] | None = None

    def on_assign(self, partitions: list[int]) -> None:
        """Called from the consumer's rebalance callback: restore before the next batch."""
        with self._lock:
            self._pending_partitions = set(partitions) | (self._pending_partitions or set())

    def restore_if_needed(self) -> int:
        with self._lock:
            partitions, self._pending_partitions = self._pending_partitions, None
        if not partitions:
            return 0
        return self._restore(sorted(partitions))

    def _restore(self, partitions: list[int], deadline_s: float = 60.0) -> int:
        # The one consumer configuration (how to reach the broker, no auto-commit); the group is
        # never joined nor committed to: assign(), not subscribe().
        consumer = make_consumer(self.settings, f"{self.topic}.restore")
        try:
            ends: dict[int, int] = {}
            for p in partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=10)
                if high > low:
                    ends[p] = high
            if not ends:
                return 0
            consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in ends])
            restored = skipped = 0
            deadline = time.monotonic() + deadline_s
            while ends:
                if time.monotonic() > deadline:
                    # Serving with a partial table would let duplicates through: fail loudly and
                    # let the runtime retry (or an operator look at the changelog).
                    raise TimeoutError(
                        f"restoring {self.topic} partitions {sorted(ends)} took over {deadline_s:.0f}s"
                    )
                for message in consumer.consume(500, 1.0):
                    if message.error():
                        continue
                    partition = message.partition()
                    # The end check comes first: an unreadable last record must not stall the restore.
                    if message.offset() + 1 >= ends.get(partition, 0):
                        ends.pop(partition, None)
                    try:
                        value = self.serde.decode(message.value())
                    except SerdeError as exc:
                        skipped += 1
                        log.warning(
                            "skipping unreadable %s record at %d/%d: %s",
                            self.topic,
                            partition,
                            message.offset(),
                            exc,
                        )
                        continue
                    self._seen[value["key"]] = value
                    restored += 1
            if skipped:
                log.warning("restored %d entries of %s; skipped %d unreadable", restored, self.topic, skipped)
            return restored
        finally:
            consumer.close()

    def get(self, key: str) -> dict[str, Any] | None:
        return self._seen.get(key)

    def add(self, record: dict[str, Any]) -> None:
        self._seen[record["key"]] = record

    def __len__(self) -> int:
        return len(self._seen)
