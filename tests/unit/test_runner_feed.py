"""The partition feed on the in-memory consumer: the prefetching runner pauses when its queue is
full and resumes when it drains, in order and committed to the end; partitions assigned while
paused stay paused; a batch fetched before its partition was revoked is dropped; lag is recorded;
a consumer that resumed past retention records the range it lost as an `offset_reset` event."""

from __future__ import annotations

import asyncio
import time
from typing import ClassVar

from processors.config import KafkaSettings, Settings, StageSettings
from processors.runtime import Event, InputRecord, Outcome, Stage
from processors.runtime.feed import AheadQueue
from processors.runtime.memory import MemoryBroker, MemoryConsumer, MemoryProducer
from processors.runtime.runner import StageRunner
from processors.runtime.stage import StageContext
from schemas.confluent_serde import memory_serdes
from schemas.topics import Topic, TopicNames
from tests.fixtures.avro_samples import JOB_V1

PREFIX = "t."
INPUT = TopicNames(PREFIX)(Topic.JOBS_ACCEPTED)
JOBS = memory_serdes(PREFIX)(Topic.JOBS_ACCEPTED)
GROUP = "g"


class SlowStage(Stage):
    """Stands in for a GPU: each record takes a while, so the fetcher outruns it."""

    name: ClassVar[str] = "slow"
    inputs: ClassVar[tuple[Topic, ...]] = (Topic.JOBS_ACCEPTED,)
    outputs: ClassVar[tuple[Topic, ...]] = ()

    def __init__(self, ctx: StageContext, prefetch: int) -> None:
        super().__init__(ctx)
        self.prefetch_batches = prefetch
        self.seen: list[str] = []
        self.assigned: list[tuple[Topic, list[int]]] = []

    def partitions_assigned(self, topic: Topic, partitions: list[int]) -> None:
        self.assigned.append((topic, sorted(partitions)))

    async def handle(self, record: InputRecord) -> Outcome:
        await asyncio.sleep(0.02)
        self.seen.append(record.value["job_id"])
        return Outcome(events=[Event(record.value["job_id"], "approved")])


def _runner(broker: MemoryBroker, prefetch: int = 0, batch_size: int = 1) -> StageRunner:
    settings = Settings(
        kafka=KafkaSettings(topic_prefix=PREFIX),
        stage=StageSettings(batch_size=batch_size, batch_timeout_s=0.01),
    )
    return StageRunner(
        SlowStage(StageContext(settings, "slow"), prefetch),
        consumer=MemoryConsumer(broker, GROUP),
        producer=MemoryProducer(broker),
    )


def _publish(broker: MemoryBroker, job_ids: list[str], partition: int = 0) -> None:
    for job_id in job_ids:
        broker.append(INPUT, JOBS.encode({**JOB_V1, "job_id": job_id}), key=job_id, partition=partition)


async def test_a_full_queue_pauses_then_everything_is_processed_in_order_and_committed() -> None:
    broker = MemoryBroker()
    ids = [f"job-{n:02d}" for n in range(12)]
    _publish(broker, ids)
    runner = _runner(broker, prefetch=1)
    consumer = runner.consumer
    assert isinstance(consumer, MemoryConsumer) and isinstance(runner.stage, SlowStage)

    task = asyncio.create_task(runner.run())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and broker.committed_offset(GROUP, INPUT, 0) != len(ids):
        await asyncio.sleep(0.02)
    runner.request_stop()
    await asyncio.wait_for(task, timeout=10)

    assert runner.stage.seen == ids, "every message, once, in partition order"
    kinds = [kind for kind, _ in consumer.flow_control]
    assert "pause" in kinds and "resume" in kinds[kinds.index("pause") :], "paused, then resumed"
    assert consumer.flow_control[0][1] == [(INPUT, 0)]
    assert runner.metrics.paused.labels("slow")._value.get() >= 1
    offsets = [c.offset for c in broker.commits]
    assert offsets == sorted(offsets) and offsets[-1] == len(ids), "commits in batch order, to the end"


async def test_partitions_assigned_while_paused_are_paused_too() -> None:
    broker = MemoryBroker(default_partitions=2)
    _publish(broker, ["job-a", "job-b"], partition=0)
    runner = _runner(broker)
    consumer = runner.consumer
    assert isinstance(consumer, MemoryConsumer)
    runner.feed.subscribe([INPUT])
    consumer.revoke([(INPUT, 1)])  # joins with both partitions, then loses partition 1
    queue, stopping = AheadQueue(), asyncio.Event()
    # Nobody takes from the queue: the first batch fills it (high mark 1) and the feed pauses.
    fetcher = asyncio.create_task(runner.feed.fetch_ahead(queue, 1, stopping))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not consumer.paused:
        await asyncio.sleep(0.01)
    assert consumer.paused == {(INPUT, 0)}

    consumer.assign([(INPUT, 1)])  # a rebalance hands partition 1 back while paused
    while time.monotonic() < deadline and (INPUT, 1) not in consumer.paused:
        await asyncio.sleep(0.01)
    stopping.set()
    await asyncio.wait_for(fetcher, timeout=5)
    assert consumer.paused == {(INPUT, 0), (INPUT, 1)}, "a new partition must not run unpaused"
    assert runner.stage.assigned == [(Topic.JOBS_ACCEPTED, [0, 1]), (Topic.JOBS_ACCEPTED, [1])]
    runner.feed.close()


async def test_a_partition_lost_while_held_and_assigned_again_is_not_left_paused() -> None:
    # A broker outage while a batch is held: the group takes the (paused) partition away, the
    # hold ends with nothing assigned to resume, and the partition comes back still paused in the
    # client. Its records would never be handed over.
    broker = MemoryBroker()
    runner = _runner(broker)
    consumer = runner.consumer
    assert isinstance(consumer, MemoryConsumer)
    runner.feed.subscribe([INPUT])
    assert (await runner.feed.fetch()).messages == []  # joined, partition 0 assigned
    await runner.feed.hold("long batch")
    assert consumer.paused == {(INPUT, 0)}
    consumer.revoke([(INPUT, 0)])
    assert (await runner.feed.fetch()).messages == []  # the revoke runs inside this consume()
    await runner.feed.release("long batch")
    consumer.assign([(INPUT, 0)])
    _publish(broker, ["job-after"])
    fetched = [JOBS.decode(m.value())["job_id"] for m in (await runner.feed.fetch()).messages]
    fetched += [JOBS.decode(m.value())["job_id"] for m in (await runner.feed.fetch()).messages]
    assert fetched == ["job-after"]
    assert consumer.paused == set()
    runner.feed.close()


async def test_a_batch_fetched_before_its_partition_was_revoked_is_dropped() -> None:
    broker = MemoryBroker(default_partitions=2)
    _publish(broker, ["p0-a"], partition=0)
    _publish(broker, ["p1-a"], partition=1)
    runner = _runner(broker, batch_size=10)
    consumer = runner.consumer
    assert isinstance(consumer, MemoryConsumer)
    runner.feed.subscribe([INPUT])

    stale = await runner.feed.fetch()
    assert {m.partition() for m in stale.messages} == {0, 1}
    consumer.revoke([(INPUT, 0)])
    _publish(broker, ["p1-b"], partition=1)
    later = await runner.feed.fetch()  # the revoke runs inside this consume()

    assert [m.partition() for m in runner.feed.still_owned(stale)] == [1], "partition 0 moved away"
    assert [JOBS.decode(m.value())["job_id"] for m in runner.feed.still_owned(later)] == ["p1-b"]
    # Handed back: nothing was committed, so it is read again from the start and kept.
    consumer.assign([(INPUT, 0)])
    again = await runner.feed.fetch()
    assert [JOBS.decode(m.value())["job_id"] for m in runner.feed.still_owned(again)] == ["p0-a"]
    runner.feed.close()


async def test_lag_is_what_remains_after_the_committed_batch() -> None:
    broker = MemoryBroker()
    _publish(broker, [f"job-{n}" for n in range(5)])
    runner = _runner(broker, batch_size=2)
    await asyncio.wait_for(runner.run(max_batches=1), timeout=10)
    assert runner.metrics.lag.labels("slow", f"{INPUT}/0")._value.get() == 3


EVENTS = memory_serdes(PREFIX)(Topic.PIPELINE_EVENTS)


async def test_resuming_past_retention_records_the_lost_range_as_an_event() -> None:
    broker = MemoryBroker()
    _publish(broker, [f"job-{n}" for n in range(7)])
    await asyncio.wait_for(_runner(broker, batch_size=2).run(max_batches=1), timeout=10)
    assert broker.committed_offset(GROUP, INPUT, 0) == 2
    # While the stage was away, retention deleted offsets 2..4: nobody ever read them.
    broker.delete_records(INPUT, 0, before=5)

    runner = _runner(broker, batch_size=2)
    await asyncio.wait_for(runner.run(max_batches=1), timeout=10)
    assert runner.stage.seen == ["job-5", "job-6"]  # type: ignore[attr-defined]
    events = [EVENTS.decode(m.value()) for m in broker.messages(TopicNames(PREFIX)(Topic.PIPELINE_EVENTS))]
    (gap,) = [e for e in events if e["state"] == "offset_reset"]
    assert gap["reason"] == "retention" and gap["stage"] == "slow"
    assert {k: gap["attributes"][k] for k in ("topic", "partition", "from", "to", "lost")} == {
        "topic": INPUT,
        "partition": "0",
        "from": "2",
        "to": "5",
        "lost": "3",
    }
    assert "offsets 2..4" in gap["detail"]
    assert runner.metrics.offset_resets.labels("slow")._value.get() == 1
    assert broker.committed_offset(GROUP, INPUT, 0) == 7


async def test_a_consumer_overtaken_by_retention_mid_stream_records_the_gap() -> None:
    broker = MemoryBroker()
    _publish(broker, [f"job-{n}" for n in range(6)])
    runner = _runner(broker, batch_size=2)
    runner.feed.subscribe([INPUT])
    first = await runner.feed.fetch()
    assert [m.offset() for m in first.messages] == [0, 1]
    broker.delete_records(INPUT, 0, before=4)
    second = await runner.feed.fetch()
    assert [m.offset() for m in second.messages] == [4, 5]
    (gap,) = runner.feed.take_gaps()
    assert (gap.topic, gap.partition, gap.start, gap.end, gap.lost) == (INPUT, 0, 2, 4, 2)
    # A resumed, paused or re-fetched partition is not a gap.
    assert runner.feed.take_gaps() == []
    runner.feed.close()


async def test_no_gap_when_nothing_was_deleted() -> None:
    broker = MemoryBroker()
    _publish(broker, [f"job-{n}" for n in range(4)])
    await asyncio.wait_for(_runner(broker, batch_size=2).run(max_batches=1), timeout=10)
    runner = _runner(broker, batch_size=2)
    await asyncio.wait_for(runner.run(max_batches=1), timeout=10)
    assert runner.metrics.offset_resets.labels("slow")._value.get() == 0


class CountingConsumer(MemoryConsumer):
    """Counts the watermark lookups that would go to the broker; `known_low` False: the consumer
    has heard no log start yet (librdkafka answers -1001 from its cache then)."""

    def __init__(self, broker: MemoryBroker, group_id: str, known_low: bool = True) -> None:
        super().__init__(broker, group_id)
        self.known_low = known_low
        self.broker_lookups = 0

    def get_watermark_offsets(self, partition, timeout=None, cached=False):  # type: ignore[no-untyped-def]
        low, high = super().get_watermark_offsets(partition, timeout, cached)
        if not cached:
            self.broker_lookups += 1
        elif not self.known_low:
            return (-1001, -1001)
        return (low, high)


def _skipping_offsets(broker: MemoryBroker) -> None:
    """job-0, then a transaction's records skipped (aborted: what a commit marker's offset is to
    a read_committed reader too), then job-3: offset 3 follows offset 0."""
    _publish(broker, ["job-0"])
    for job_id in ("aborted-1", "aborted-2"):
        broker.append(INPUT, JOBS.encode({**JOB_V1, "job_id": job_id}), key=job_id, partition=0, txid="t")
    broker.init_transactions("t")  # aborts the open transaction
    _publish(broker, ["job-3"])


async def _fetch_all(runner: StageRunner) -> list[int]:
    runner.feed.subscribe([INPUT])
    offsets: list[int] = []
    while len(offsets) < 2:
        offsets += [m.offset() for m in (await runner.feed.fetch()).messages]
    return offsets


def _counting_runner(broker: MemoryBroker, consumer: CountingConsumer) -> StageRunner:
    settings = Settings(
        kafka=KafkaSettings(topic_prefix=PREFIX), stage=StageSettings(batch_size=2, batch_timeout_s=0.01)
    )
    return StageRunner(
        SlowStage(StageContext(settings, "slow"), 0), consumer=consumer, producer=MemoryProducer(broker)
    )


async def test_a_skipped_offset_is_checked_against_the_log_start_the_consumer_holds() -> None:
    # A broker lookup would queue behind the consumer's parked fetch (one connection): under
    # exactly-once every hop would wait fetch.wait.max.ms for it (docs/benchmarks.md).
    broker = MemoryBroker()
    _skipping_offsets(broker)
    consumer = CountingConsumer(broker, GROUP)
    runner = _counting_runner(broker, consumer)
    assert await _fetch_all(runner) == [0, 3]
    assert runner.feed.take_gaps() == []  # nothing was deleted: not a gap
    assert consumer.broker_lookups == 0
    runner.feed.close()


async def test_the_broker_is_asked_when_the_consumer_holds_no_log_start() -> None:
    broker = MemoryBroker()
    _skipping_offsets(broker)
    consumer = CountingConsumer(broker, GROUP, known_low=False)
    runner = _counting_runner(broker, consumer)
    assert await _fetch_all(runner) == [0, 3]
    assert runner.feed.take_gaps() == []
    assert consumer.broker_lookups == 1
    runner.feed.close()
