"""The de-duplication table forgets: expired entries are not answered, are skipped on restore and
swept while running, and each is tombstoned on the changelog; a restore's deadline scales with the
changelog and it reports progress; revoked partitions are dropped. Kafka is stood in for by the
in-memory producer and a scripted consumer here; tests/integration/test_intake_changelog.py runs
the same against the real broker."""

from __future__ import annotations

import gc
import logging
from typing import Any

import pytest
from confluent_kafka import KafkaError, Message, TopicPartition

from processors.config import load_settings
from processors.runtime.memory import MemoryBroker, MemoryProducer
from processors.state.entry import SeenEntry
from processors.state.restore import RestoreBudget, RestoreTimeout, read_to_end
from processors.state.seen_table import SeenTable
from schemas.confluent_serde import memory_serdes
from schemas.topics import Topic

DAY_S = 86400.0
TOPIC = "intake.seen"
SERDE = memory_serdes("")(Topic.INTAKE_SEEN)


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def entry(partition: int, updated_s: float, job: str = "job-1") -> SeenEntry:
    ms = int(updated_s * 1000)
    return SeenEntry(partition, (job,), "evt-1", ms, ms, partition, 3, bytes(32), ms)


def encoded(key: str, e: SeenEntry) -> bytes:
    return SERDE.encode(e.to_record(key))


class ScriptedConsumer:
    """A changelog consumer: per partition a list of (key, value); consume() hands them out in
    order, then a partition-EOF per partition, as librdkafka does with enable.partition.eof."""

    def __init__(
        self, partitions: dict[int, list[tuple[bytes | None, bytes | None]]], per_call: int = 1000
    ) -> None:
        self.partitions = partitions
        self.per_call = per_call
        self.assigned: list[TopicPartition] = []
        self.closed = False
        self.consume_calls = 0
        self._queue: list[Message] = []

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float = 0) -> tuple[int, int]:
        return 0, len(self.partitions.get(tp.partition, []))

    def assign(self, tps: list[TopicPartition]) -> None:
        self.assigned = tps
        for tp in tps:
            for offset, (key, value) in enumerate(self.partitions[tp.partition]):
                self._queue.append(
                    Message(topic=TOPIC, partition=tp.partition, offset=offset, key=key, value=value)
                )
            eof = KafkaError(KafkaError._PARTITION_EOF)
            self._queue.append(Message(topic=TOPIC, partition=tp.partition, offset=-1, error=eof))

    def consume(self, n: int, timeout: float) -> list[Message]:
        self.consume_calls += 1
        out, self._queue = self._queue[: min(n, self.per_call)], self._queue[min(n, self.per_call) :]
        return out

    def close(self) -> None:
        self.closed = True


def table(
    clock: Clock, consumer: Any = None, ttl_days: float = 30, **intake: Any
) -> tuple[SeenTable, MemoryBroker]:
    base = load_settings()
    settings = base.model_copy(
        update={"intake": base.intake.model_copy(update={"dedup_ttl_s": ttl_days * DAY_S, **intake})}
    )
    broker = MemoryBroker(default_partitions=3)
    broker.create_topic(TOPIC, 3)
    seen = SeenTable(
        settings,
        TOPIC,
        clock=clock,
        producer=MemoryProducer(broker),
        consumer_factory=(lambda: consumer) if consumer is not None else None,
    )
    return seen, broker


def tombstones(broker: MemoryBroker) -> list[tuple[int, bytes]]:
    return [(m.partition(), m.key()) for m in broker.messages(TOPIC) if m.value() is None]


def test_the_ttl_defaults_to_30_days() -> None:
    assert load_settings().intake.dedup_ttl_s == 30 * DAY_S


def test_an_expired_entry_is_not_answered_even_before_a_sweep() -> None:
    clock = Clock()
    seen, _ = table(clock)
    seen.put("event:old", entry(0, clock.now - 30 * DAY_S - 1))
    seen.put("event:new", entry(0, clock.now - 29 * DAY_S))
    assert seen.get("event:old") is None
    assert seen.get("event:new") is not None


def test_a_sweep_forgets_expired_entries_and_tombstones_each_in_its_partition() -> None:
    clock = Clock()
    seen, broker = table(clock, sweep_interval_s=600)
    seen.put("event:a", entry(0, clock.now - 40 * DAY_S))
    seen.put("slot:b", entry(2, clock.now - 31 * DAY_S))
    seen.put("event:c", entry(1, clock.now - DAY_S))

    assert seen.sweep_if_due() == 0, "not due before the interval"
    clock.now += 601
    assert seen.sweep_if_due() == 2
    assert len(seen) == 1 and seen.get("event:c") is not None
    assert sorted(tombstones(broker)) == [(0, b"event:a"), (2, b"slot:b")]
    assert seen.sweep_if_due() == 0, "the next sweep waits another interval"


def test_restore_skips_expired_entries_tombstones_them_and_honours_changelog_tombstones() -> None:
    clock = Clock()
    now = clock.now
    changelog = {
        0: [
            (b"event:live", encoded("event:live", entry(0, now - DAY_S))),
            (b"event:old", encoded("event:old", entry(0, now - 31 * DAY_S))),
            (b"event:gone", encoded("event:gone", entry(0, now - DAY_S))),
            (b"event:gone", None),  # a tombstone written by an earlier sweep
        ],
        1: [
            # An expired value renewed later: the later, live value wins and is not tombstoned.
            (b"slot:renewed", encoded("slot:renewed", entry(1, now - 35 * DAY_S))),
            (b"slot:renewed", encoded("slot:renewed", entry(1, now - 2 * DAY_S, job="job-2"))),
            (b"slot:garbage", b"\x00not avro"),
        ],
    }
    consumer = ScriptedConsumer(changelog)
    seen, broker = table(clock, consumer)
    seen.on_assign([0, 1])

    report = seen.restore_if_needed()

    assert report is not None and report.read == 7
    assert report.counts == {"loaded": 3, "expired": 2, "deleted": 1, "unreadable": 1}
    assert set(seen._entries) == {"event:live", "slot:renewed"}
    assert seen.get("slot:renewed").job_ids == ("job-2",)  # type: ignore[union-attr]
    assert tombstones(broker) == [(0, b"event:old")]
    assert consumer.closed
    assert gc.isenabled(), "collection is paused while restoring only"
    assert seen.restore_if_needed() is None, "nothing new assigned: no second restore"


def test_a_v2_entry_expires_from_its_first_sighting() -> None:
    clock = Clock()
    old = {
        "key": "job:j",
        "job_ids": ["j"],
        "event_id": "e",
        "first_seen_at": int((clock.now - 31 * DAY_S) * 1000),
    }
    consumer = ScriptedConsumer(
        {0: [(b"job:j", SERDE.encode({**old, "source_partition": 0, "source_offset": 1}, version=2))]}
    )
    seen, broker = table(clock, consumer)
    seen.on_assign([0])
    seen.restore_if_needed()
    assert len(seen) == 0 and tombstones(broker) == [(0, b"job:j")]


def test_revoked_partitions_are_dropped_and_not_restored() -> None:
    clock = Clock()
    seen, _ = table(clock)
    seen.put("event:p0", entry(0, clock.now))
    seen.put("event:p1", entry(1, clock.now))
    seen.on_assign([1])
    seen.on_revoke([1])  # gone again before the next batch
    assert seen.restore_if_needed() is None
    assert set(seen._entries) == {"event:p0"}


def test_the_restore_deadline_is_a_floor_plus_a_budget_per_record() -> None:
    budget = RestoreBudget(floor_s=60, per_record_s=0.0005)
    assert budget.deadline_s(0) == 60
    assert budget.deadline_s(2_000_000) == pytest.approx(1060)
    defaults = load_settings().intake
    assert RestoreBudget(defaults.restore_floor_s, defaults.restore_per_record_s).deadline_s(2_000_000) > 600


def test_a_restore_past_its_budget_fails_naming_how_far_it_got() -> None:
    records = [(f"event:{i}".encode(), encoded(f"event:{i}", entry(0, 1_800_000_000))) for i in range(50)]
    consumer = ScriptedConsumer({0: records}, per_call=10)
    ticks = iter(range(0, 10_000))

    def clock() -> float:  # one second per look at the clock
        return float(next(ticks))

    with pytest.raises(RestoreTimeout, match=r"of 50 records"):
        read_to_end(consumer, TOPIC, [0], lambda *_: None, RestoreBudget(floor_s=2, per_record_s=0.01), clock)


def test_a_restore_reports_progress_with_rate_and_percent_of_the_end_offsets(
    caplog: pytest.LogCaptureFixture,
) -> None:
    records = [(f"event:{i}".encode(), b"x") for i in range(40)]
    consumer = ScriptedConsumer({0: records[:20], 1: records[20:]}, per_call=10)
    ticks = iter(range(0, 10_000))
    applied: list[tuple[int, bytes | None]] = []
    with caplog.at_level(logging.INFO, logger="processors.state.restore"):
        report = read_to_end(
            consumer,
            TOPIC,
            [0, 1],
            lambda p, k, v: applied.append((p, k)),
            RestoreBudget(floor_s=1000, per_record_s=0, progress_s=1),
            lambda: float(next(ticks)),
        )
    assert report.read == 40 and len(applied) == 40
    notes = [r.getMessage() for r in caplog.records if "% of the end offsets" in r.getMessage()]
    assert notes, "progress lines while restoring"
    assert all("records/s" in n for n in notes)
    assert any("10 of 40 records (25.0% of the end offsets)" in n for n in notes)
    assert any(
        r.getMessage().startswith("read intake.seen partitions [0, 1] to their end") for r in caplog.records
    )


def test_a_compacted_tail_ends_the_partition_at_eof() -> None:
    # The end offset is 5 but the last records were compacted away: only 3 are there.
    consumer = ScriptedConsumer({0: [(b"event:a", b"x")] * 3})
    consumer.get_watermark_offsets = lambda tp, timeout=0: (0, 5)  # type: ignore[method-assign]
    report = read_to_end(consumer, TOPIC, [0], lambda *_: None, RestoreBudget(floor_s=5, per_record_s=0))
    assert report.read == 3
