"""Intake's de-duplication table: entries in memory, backed by a compacted changelog topic.

The changelog is partitioned like the input topic: intake writes each entry to the partition of
the catalog event that made it, and only handles an event in its product's slot partition (it
re-keys the others), so the consumer that owns input partition P owns changelog partition P. On
every assignment the table re-reads the assigned changelog partitions to their end
(processors/state/restore.py: progress lines, a deadline that scales with the changelog), so a
consumer that takes over a partition also takes over what its previous owner had seen.

Bounded: an entry not written for ``intake.dedup_ttl_s`` (30 days by default) is forgotten. A
restore skips expired entries, and a sweep every ``intake.sweep_interval_s`` drops them from
memory; either way they are tombstoned (a null value for the key) on the changelog, so compaction
removes them there too. Tombstones are sent by the table's own producer, outside the stage's
batch: one that is lost is sent again by the next restore or sweep that meets the entry.

Writing entries is the stage's: it puts an entry here and sends ``to_record`` through its outbox
with the batch's other outputs, so an entry and the jobs it stands for are delivered together.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from processors.config import Settings
from processors.kafka_clients import (
    DeliveryFailed,
    Outgoing,
    make_consumer,
    make_producer,
    produce_and_confirm,
)
from processors.runtime.codec import Codec
from processors.state.entry import SeenEntry
from processors.state.restore import RestoreBudget, RestoreReport, read_to_end
from schemas.serde import SerdeError
from schemas.topics import Topic

log = logging.getLogger(__name__)

# Unreadable records are counted; only the first few are logged one by one.
_LOGGED_UNREADABLE = 10


class SeenTable:
    def __init__(
        self,
        settings: Settings,
        changelog_topic: str,
        *,
        clock: Callable[[], float] = time.time,
        producer: Any | None = None,
        consumer_factory: Callable[[], Any] | None = None,
    ) -> None:
        """producer (for tombstones) and consumer_factory (a fresh consumer per restore): the
        real confluent-kafka ones when not given; tests pass in-memory ones."""
        self.settings = settings
        self.topic = changelog_topic
        intake = settings.intake
        self.ttl_ms = int(intake.dedup_ttl_s * 1000)
        self.sweep_interval_s = intake.sweep_interval_s
        self.budget = RestoreBudget(
            intake.restore_floor_s, intake.restore_per_record_s, intake.restore_progress_s
        )
        # The serde the stage's outbox writes entries with (the codec's, whatever its framing).
        self.serde = Codec.of(settings).serde(Topic.INTAKE_SEEN)
        self.clock = clock
        self._entries: dict[str, SeenEntry] = {}
        self._lock = threading.Lock()
        self._to_restore: set[int] = set()
        self._to_drop: set[int] = set()
        self._next_sweep = clock() + self.sweep_interval_s
        self._producer = producer  # else created when the first tombstone is sent
        self._consumer_factory = consumer_factory or self._restore_consumer

    # -- rebalances (called on the consumer's poll thread: note, do not block) ----------------

    def on_assign(self, partitions: list[int]) -> None:
        with self._lock:
            self._to_restore |= set(partitions)

    def on_revoke(self, partitions: list[int]) -> None:
        """Its new owner restores these: our copy would go stale, and a sweep here could tombstone
        an entry the new owner has just renewed."""
        with self._lock:
            self._to_drop |= set(partitions)
            self._to_restore -= set(partitions)

    # -- before a batch (blocking: run off the event loop) ------------------------------------

    def restore_if_needed(self) -> RestoreReport | None:
        with self._lock:
            drop, self._to_drop = self._to_drop, set()
            restore, self._to_restore = self._to_restore, set()
        if drop:
            self._drop_partitions(drop)
        if not restore:
            return None
        return self._restore(sorted(restore))

    def sweep_if_due(self) -> int:
        """Forget and tombstone expired entries, at most once per sweep interval."""
        now = self.clock()
        if now < self._next_sweep:
            return 0
        self._next_sweep = now + self.sweep_interval_s
        return self.sweep()

    def sweep(self) -> int:
        now_ms = int(self.clock() * 1000)
        expired = [
            (key, entry.partition)
            for key, entry in self._entries.items()
            if entry.expired(now_ms, self.ttl_ms)
        ]
        for key, _ in expired:
            del self._entries[key]
        if expired:
            self._tombstone(expired)
            log.info("forgot %d expired entries of %s; %d remain", len(expired), self.topic, len(self))
        return len(expired)

    # -- lookups and writes (the stage's handler) ----------------------------------------------

    def get(self, key: str) -> SeenEntry | None:
        entry = self._entries.get(key)
        if entry is None or entry.expired(int(self.clock() * 1000), self.ttl_ms):
            # Expired but not swept yet: forgotten all the same, or the sweep interval would
            # decide what the TTL means.
            return None
        return entry

    def put(self, key: str, entry: SeenEntry) -> None:
        self._entries[key] = entry

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def __len__(self) -> int:
        return len(self._entries)

    # -- inside ----------------------------------------------------------------------------------

    def _drop_partitions(self, partitions: set[int]) -> None:
        keys = [key for key, entry in self._entries.items() if entry.partition in partitions]
        for key in keys:
            del self._entries[key]
        log.info("dropped %d entries of revoked %s partitions %s", len(keys), self.topic, sorted(partitions))

    def _restore_consumer(self) -> Any:
        # The one consumer configuration (how to reach the broker, no auto-commit); the group is
        # never joined nor committed to: assign(), not subscribe(). partition.eof ends a partition
        # whose last offsets were compacted away. The prefetch queue is kept small: decoding is
        # the bottleneck, and librdkafka's default (64 MiB a partition) would cost more memory
        # than the table itself while restoring.
        return make_consumer(
            self.settings,
            f"{self.topic}.restore",
            **{
                "enable.partition.eof": True,
                "queued.max.messages.kbytes": 8192,
                "fetch.max.bytes": 8 * 2**20,
            },
        )

    def _restore(self, partitions: list[int]) -> RestoreReport:
        consumer = self._consumer_factory()
        now_ms = self.now_ms()
        counts = {"loaded": 0, "expired": 0, "deleted": 0, "unreadable": 0}
        expired: dict[str, int] = {}  # expired keys still to tombstone -> partition

        def apply(partition: int, raw_key: bytes | None, raw_value: bytes | None) -> None:
            if raw_key is None:
                counts["unreadable"] += 1
                return
            key = raw_key.decode("utf-8", "replace")
            if raw_value is None:  # a tombstone: the key was forgotten
                self._entries.pop(key, None)
                expired.pop(key, None)
                counts["deleted"] += 1
                return
            try:
                entry = SeenEntry.from_record(self.serde.decode(raw_value), partition)
            except SerdeError as exc:
                counts["unreadable"] += 1
                if counts["unreadable"] <= _LOGGED_UNREADABLE:
                    log.warning(
                        "skipping an unreadable %s record in partition %d: %s", self.topic, partition, exc
                    )
                return
            if entry.expired(now_ms, self.ttl_ms):
                self._entries.pop(key, None)
                expired[key] = partition
                counts["expired"] += 1
                return
            self._entries[key] = entry
            expired.pop(key, None)
            counts["loaded"] += 1

        # Millions of long-lived entries make each automatic collection walk them all, again
        # and again while they are loaded (the restore slows as it grows); none of them is in a
        # cycle, so collection waits until the end, and the survivors are frozen out of it.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            report = read_to_end(consumer, self.topic, partitions, apply, self.budget)
        finally:
            consumer.close()
            if gc_was_enabled:
                gc.enable()
        gc.freeze()
        report.counts = counts
        if expired:
            self._tombstone(list(expired.items()))
        log.info(
            "restored %s partitions %s: %d entries now in memory; %s",
            self.topic,
            partitions,
            len(self),
            ", ".join(f"{k} {v}" for k, v in counts.items()),
        )
        if counts["unreadable"]:
            log.warning("restored %s with %d unreadable records skipped", self.topic, counts["unreadable"])
        return report

    def _tombstone(self, keys: list[tuple[str, int]]) -> None:
        if self._producer is None:
            self._producer = make_producer(self.settings)
        messages = [Outgoing(self.topic, key.encode(), None, None, partition) for key, partition in keys]
        try:
            produce_and_confirm(self._producer, messages)
        except DeliveryFailed as exc:
            # Memory has forgotten them already; the changelog keeps them until the next restore
            # or sweep meets them expired again and retries.
            log.warning("could not tombstone %d expired entries of %s: %s", len(keys), self.topic, exc)
