"""Reading a changelog's partitions to their end offsets, with progress and a deadline that scales.

A restore is the one thing a state-holding stage must finish before it may handle anything, and
its length grows with the changelog. So it reports how far it is (log lines with records/s and the
percentage of the end offsets, every few seconds) and its deadline is a budget per record plus a
floor, computed from the end offsets before the first record is read: a table of two million
entries gets minutes, an empty one the floor, never one fixed number for both.

What a record means is the caller's (``apply``); this module only reads.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, TopicPartition

log = logging.getLogger(__name__)

# (partition, key, value) of one changelog record; value None is a tombstone.
Apply = Callable[[int, bytes | None, bytes | None], None]

_BATCH = 10_000


class RestoreTimeout(TimeoutError):
    """The restore did not reach the end offsets within its budget: serving with a partial table
    would let duplicates through, so the stage fails loudly (and is restarted) instead."""


@dataclass(frozen=True)
class RestoreBudget:
    floor_s: float
    per_record_s: float
    progress_s: float = 5.0

    def deadline_s(self, records: int) -> float:
        return self.floor_s + self.per_record_s * max(0, records)


@dataclass
class RestoreReport:
    topic: str
    partitions: list[int]
    total: int  # records between the low and high watermarks when the restore began
    deadline_s: float
    read: int = 0
    seconds: float = 0.0
    # What the records turned out to be, as the caller counts them (apply's business).
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.read / self.seconds if self.seconds > 0 else float(self.read)


class _Progress:
    """Offsets reached per partition, so the percentage is of the end offsets (a compacted
    changelog has gaps: counting records would never reach 100 %)."""

    def __init__(self, bounds: dict[int, tuple[int, int]]) -> None:
        self.bounds = bounds
        self.reached = {p: low for p, (low, _) in bounds.items()}
        self.total = sum(high - low for low, high in bounds.values())

    def advance(self, partition: int, next_offset: int) -> None:
        if next_offset > self.reached.get(partition, 0):
            self.reached[partition] = next_offset

    def finish(self, partition: int) -> None:
        self.reached[partition] = self.bounds[partition][1]

    @property
    def done(self) -> int:
        return sum(self.reached[p] - low for p, (low, _) in self.bounds.items())

    @property
    def percent(self) -> float:
        return 100.0 * self.done / self.total if self.total else 100.0


def read_to_end(
    consumer: object,
    topic: str,
    partitions: list[int],
    apply: Apply,
    budget: RestoreBudget,
    clock: Callable[[], float] = time.monotonic,
) -> RestoreReport:
    """Feed every record of the partitions, from the beginning to the end offsets read now, to
    apply(). The consumer should have enable.partition.eof set: a compacted tail (the last
    offsets gone) then still ends the partition. Raises RestoreTimeout past the budget."""
    bounds: dict[int, tuple[int, int]] = {}
    for p in partitions:
        low, high = _watermarks(consumer, TopicPartition(topic, p))
        if high > low:
            bounds[p] = (low, high)
    progress = _Progress(bounds)
    report = RestoreReport(topic, sorted(partitions), progress.total, budget.deadline_s(progress.total))
    if not bounds:
        return report
    started = clock()
    deadline = started + report.deadline_s
    next_note = started + budget.progress_s
    log.info(
        "restoring %s partitions %s: %d records to read, deadline %.0fs",
        topic,
        sorted(bounds),
        progress.total,
        report.deadline_s,
        extra={"topic": topic},
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in bounds])  # type: ignore[attr-defined]
    open_partitions = set(bounds)
    try:
        while open_partitions:
            now = clock()
            if now > deadline:
                raise RestoreTimeout(
                    f"restoring {topic} partitions {sorted(open_partitions)} took over "
                    f"{report.deadline_s:.0f}s: {progress.done} of {progress.total} records "
                    f"({progress.percent:.1f}%) at {report.read / max(now - started, 1e-9):,.0f} "
                    "records/s (intake.restore_floor_s + intake.restore_per_record_s x records)"
                )
            if now >= next_note:
                _note(topic, report, progress, now - started)
                next_note = now + budget.progress_s
            for message in consumer.consume(_BATCH, 0.5):  # type: ignore[attr-defined]
                partition = message.partition()
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        progress.finish(partition)
                        open_partitions.discard(partition)
                    else:
                        log.warning("reading %s/%s: %s", topic, partition, error)
                    continue
                if partition not in open_partitions:
                    continue
                offset = message.offset()
                end = bounds[partition][1]
                if offset >= end:
                    # Written after the restore began (the end offsets were read then): the
                    # stage's own later writes are already in memory.
                    open_partitions.discard(partition)
                    continue
                report.read += 1
                apply(partition, message.key(), message.value())
                progress.advance(partition, offset + 1)
                if offset + 1 >= end:
                    open_partitions.discard(partition)
    finally:
        report.seconds = clock() - started
    log.info(
        "read %s partitions %s to their end offsets: %d records in %.1fs (%s records/s)",
        topic,
        report.partitions,
        report.read,
        report.seconds,
        f"{report.rate:,.0f}",
        extra={"topic": topic},
    )
    return report


def _watermarks(consumer: object, tp: TopicPartition, attempts: int = 5) -> tuple[int, int]:
    """A partition's watermarks. Asked right after a rebalance or a leader change the broker may
    not answer yet (unknown partition, no leader): that is worth a few short retries, not a
    crashed stage."""
    for attempt in range(1, attempts + 1):
        try:
            low, high = consumer.get_watermark_offsets(tp, timeout=10)  # type: ignore[attr-defined]
            return int(low), int(high)
        except KafkaException as exc:
            if attempt == attempts:
                raise
            log.warning("watermarks of %s/%d not available yet (%s); retrying", tp.topic, tp.partition, exc)
            time.sleep(0.5 * attempt)
    raise AssertionError("unreachable")


def _note(topic: str, report: RestoreReport, progress: _Progress, elapsed: float) -> None:
    rate = report.read / elapsed if elapsed > 0 else 0.0
    left = (progress.total - progress.done) / rate if rate > 0 else float("inf")
    log.info(
        "restoring %s: %d of %d records (%.1f%% of the end offsets), %s records/s, about %.0fs "
        "left of a %.0fs deadline",
        topic,
        progress.done,
        progress.total,
        progress.percent,
        f"{rate:,.0f}",
        left,
        report.deadline_s - elapsed,
        extra={"topic": topic},
    )
