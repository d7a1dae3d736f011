"""Outages pause, they do not dead-letter: the real StageRunner on the in-memory broker, with a
dependency that fails for a while and then comes back.

While it is down nothing is dead-lettered and nothing committed, the partitions are paused and the
consumer keeps polling (the group keeps the stage), a `retry` event per waiting job goes out at
once (then at most every outage_event_interval_s); once it is back the stage resumes by itself. A
dependency that goes down in the middle of a batch never dead-letters the rest of it, while a
record that keeps failing when the others work is dead-lettered (the witness rule, retry.py).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, ClassVar

from processors.config import KafkaSettings, Settings, StageSettings
from processors.runtime import BatchStage, InputRecord, Outcome, Stage, TransientError
from processors.runtime.dlq import parse_headers
from processors.runtime.memory import MemoryBroker, MemoryConsumer, MemoryProducer
from processors.runtime.runner import StageRunner
from processors.runtime.stage import StageContext
from schemas.confluent_serde import memory_serdes
from schemas.topics import Topic, TopicNames
from tests.fixtures.avro_samples import JOB_V1

PREFIX = "t."
TOPICS = TopicNames(PREFIX)
INPUT = TOPICS(Topic.JOBS_ACCEPTED)
JOBS = memory_serdes(PREFIX)(Topic.JOBS_ACCEPTED)
EVENTS = memory_serdes(PREFIX)(Topic.PIPELINE_EVENTS)
GROUP = "g"


def _settings(**stage: Any) -> Settings:
    values: dict[str, Any] = {
        "batch_size": 8,
        "batch_timeout_s": 0.02,
        "max_attempts": 3,
        "backoff_initial_s": 0.02,
        "backoff_max_s": 0.05,
        **stage,
    }
    return Settings(kafka=KafkaSettings(topic_prefix=PREFIX), stage=StageSettings(**values))


def _publish(broker: MemoryBroker, *job_ids: str, partition: int | None = None) -> None:
    for job_id in job_ids:
        broker.append(INPUT, JOBS.encode({**JOB_V1, "job_id": job_id}), key=job_id, partition=partition)


def _events(broker: MemoryBroker) -> list[dict[str, Any]]:
    return [EVENTS.decode(m.value()) for m in broker.messages(TOPICS(Topic.PIPELINE_EVENTS))]


def _outputs(broker: MemoryBroker) -> list[str]:
    return [JOBS.decode(m.value())["job_id"] for m in broker.messages(TOPICS(Topic.JOBS_REFERENCED))]


def _letters(broker: MemoryBroker) -> list[dict[str, str]]:
    return [parse_headers(m.headers()) for m in broker.messages(TOPICS(Topic.PIPELINE_DLQ))]


class Dependency:
    """A shared service: down for the next `failures` calls (or until `up()`)."""

    def __init__(self, failures: int = 0, error: type[Exception] = ConnectionError) -> None:
        self.failures = failures
        self.error = error
        self.down_until_up = False
        self.calls = 0

    def up(self) -> None:
        self.down_until_up = False
        self.failures = 0

    def call(self) -> None:
        self.calls += 1
        if self.down_until_up:
            raise self.error("connection refused")
        if self.failures > 0:
            self.failures -= 1
            raise self.error("connection refused")


class UsesDependency(Stage):
    name: ClassVar[str] = "deps"
    inputs: ClassVar[tuple[Topic, ...]] = (Topic.JOBS_ACCEPTED,)
    outputs: ClassVar[tuple[Topic, ...]] = (Topic.JOBS_REFERENCED,)

    def __init__(self, ctx: StageContext, dependency: Dependency, bad: frozenset[str] = frozenset()) -> None:
        super().__init__(ctx)
        self.dependency = dependency
        self.bad = bad
        self.handled: dict[str, int] = {}

    async def handle(self, record: InputRecord) -> Outcome:
        job = record.value
        self.handled[job["job_id"]] = self.handled.get(job["job_id"], 0) + 1
        if job["job_id"] in self.bad:
            raise TransientError("this one record's upload always times out")
        self.dependency.call()
        return Outcome.forward(Topic.JOBS_REFERENCED, job, "running")


def _runner(stage: Stage, broker: MemoryBroker, producer: MemoryProducer | None = None) -> StageRunner:
    return StageRunner(
        stage,
        consumer=MemoryConsumer(broker, GROUP),
        producer=producer if producer is not None else MemoryProducer(broker),
    )


async def _until(condition: Any, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_an_outage_holds_the_partitions_commits_nothing_and_resumes_by_itself() -> None:
    broker = MemoryBroker()
    _publish(broker, "job-1", "job-2", "job-3")
    dependency = Dependency()
    dependency.down_until_up = True
    stage = UsesDependency(StageContext(_settings(max_attempts=2), "deps"), dependency)
    runner = _runner(stage, broker)
    consumer = runner.consumer
    assert isinstance(consumer, MemoryConsumer)
    task = asyncio.create_task(runner.run(max_batches=1))

    # Far more failed rounds than max_attempts: still nothing dead-lettered, nothing committed.
    await _until(lambda: dependency.calls >= 3 * 10)
    assert consumer.paused == {(INPUT, 0)}
    assert not _letters(broker) and not _outputs(broker)
    assert broker.commits == []
    polls = consumer.consume_calls
    await _until(lambda: consumer.consume_calls > polls + 1)  # the feed keeps polling while held
    # Not silent: every waiting job has a retry event out already, with the reason.
    retries = [e for e in _events(broker) if e["state"] == "retry"]
    assert {e["job_id"] for e in retries} == {"job-1", "job-2", "job-3"}
    assert {e["reason"] for e in retries} == {"ConnectionError"}
    assert {e["attributes"]["fault"] for e in retries} == {"dependency"}
    assert runner.metrics.held.labels("deps")._value.get() == 1

    dependency.up()
    await asyncio.wait_for(task, timeout=10)
    assert sorted(_outputs(broker)) == ["job-1", "job-2", "job-3"]
    assert not _letters(broker)
    assert [c.offset for c in broker.commits] == [3]
    assert [kind for kind, _ in consumer.flow_control] == ["pause", "resume"]
    assert runner.metrics.held.labels("deps")._value.get() == 0
    # The default interval is a minute: one retry event per job for the whole outage.
    assert len(retries) == 3 and len([e for e in _events(broker) if e["state"] == "retry"]) == 3


async def test_retry_events_during_an_outage_are_bounded_per_interval() -> None:
    broker = MemoryBroker()
    _publish(broker, "job-1", "job-2")
    dependency = Dependency()
    dependency.down_until_up = True
    stage = UsesDependency(StageContext(_settings(outage_event_interval_s=0.2), "deps"), dependency)
    runner = _runner(stage, broker)
    task = asyncio.create_task(runner.run(max_batches=1))
    started = time.monotonic()
    await asyncio.sleep(1.0)
    dependency.up()
    await asyncio.wait_for(task, timeout=10)
    lasted = time.monotonic() - started

    rounds = dependency.calls // 2
    per_job = [e for e in _events(broker) if e["state"] == "retry" and e["job_id"] == "job-1"]
    assert rounds > 15, "backoff capped at 0.05s: many rounds"
    # The first failure, then at most one per 0.2s: far fewer than one per round.
    assert 2 <= len(per_job) <= 1 + lasted / 0.2
    assert len({e["event_id"] for e in per_job}) == len(per_job)


async def test_a_dependency_lost_mid_batch_never_dead_letters_the_rest() -> None:
    broker = MemoryBroker()
    _publish(broker, "job-1", "job-2", "job-3", "job-4")

    class DownAfterTwo(UsesDependency):
        async def handle(self, record: InputRecord) -> Outcome:
            # The first two succeed, then the dependency goes away for a while.
            if len(self.handled) == 2 and self.dependency.calls == 2:
                self.dependency.failures = 40
            return await super().handle(record)

    dependency = Dependency()
    stage = DownAfterTwo(StageContext(_settings(max_attempts=2), "deps"), dependency)
    stage.concurrency = 1
    runner = _runner(stage, broker)
    await asyncio.wait_for(runner.run(max_batches=1), timeout=20)

    assert not _letters(broker), "the others' success came before the outage: not evidence against these"
    assert sorted(_outputs(broker)) == ["job-1", "job-2", "job-3", "job-4"], "each output once"
    assert [c.offset for c in broker.commits] == [4]
    # The witness (job-1) was tried again beside the waiting records.
    assert stage.handled["job-1"] > 1


async def test_a_record_failing_alone_while_the_others_work_is_dead_lettered_with_a_witness() -> None:
    broker = MemoryBroker()
    _publish(broker, "job-1", "job-bad", "job-3")
    dependency = Dependency()
    stage = UsesDependency(
        StageContext(_settings(max_attempts=3), "deps"), dependency, bad=frozenset({"job-bad"})
    )
    runner = _runner(stage, broker)
    await asyncio.wait_for(runner.run(max_batches=1), timeout=10)

    (letter,) = _letters(broker)
    assert letter["original.key"] == "job-bad" and letter["attempts"] == "3"
    assert (letter["error.class"], letter["fault"], letter["error.kind"]) == (
        "TransientError",
        "record",
        "dependency",
    )
    assert stage.handled["job-bad"] == 3
    assert sorted(_outputs(broker)) == ["job-1", "job-3"], "the witness's extra runs produced nothing"
    assert [c.offset for c in broker.commits] == [3]
    assert isinstance(runner.consumer, MemoryConsumer)
    assert runner.consumer.flow_control == [], "never an outage: never paused"


async def test_stopping_during_an_outage_leaves_the_batch_uncommitted() -> None:
    broker = MemoryBroker()
    _publish(broker, "job-1")
    dependency = Dependency()
    dependency.down_until_up = True
    runner = _runner(UsesDependency(StageContext(_settings(), "deps"), dependency), broker)
    task = asyncio.create_task(runner.run())
    await _until(lambda: dependency.calls >= 3)
    runner.request_stop()
    await asyncio.wait_for(task, timeout=5)
    assert broker.commits == [] and not _letters(broker) and not _outputs(broker)
    assert isinstance(runner.consumer, MemoryConsumer) and runner.consumer.closed


async def test_a_long_batch_holds_the_partitions_and_keeps_polling() -> None:
    """max.poll.interval: a handler stuck on a frozen dependency must not starve the consumer."""
    broker = MemoryBroker()
    _publish(broker, "job-1")
    release = asyncio.Event()

    class Stuck(UsesDependency):
        async def handle(self, record: InputRecord) -> Outcome:
            await release.wait()
            return await super().handle(record)

    stage = Stuck(StageContext(_settings(keepalive_after_s=0.1), "deps"), Dependency())
    runner = _runner(stage, broker)
    consumer = runner.consumer
    assert isinstance(consumer, MemoryConsumer)
    task = asyncio.create_task(runner.run(max_batches=1))
    await _until(lambda: consumer.paused)
    polls = consumer.consume_calls
    await asyncio.sleep(1.2)
    assert consumer.consume_calls >= polls + 2, "consume() kept being called while the batch was stuck"
    # A message arriving meanwhile is not lost: it waits (paused) for the next batch.
    _publish(broker, "job-2")
    release.set()
    await asyncio.wait_for(task, timeout=5)
    assert [kind for kind, _ in consumer.flow_control] == ["pause", "resume"]
    await asyncio.wait_for(_runner(stage, broker).run(max_batches=1), timeout=5)
    assert _outputs(broker) == ["job-1", "job-2"]


async def test_messages_consumed_while_held_are_carried_into_the_next_batch() -> None:
    broker = MemoryBroker(default_partitions=2)
    _publish(broker, "job-a", partition=0)
    dependency = Dependency()
    dependency.down_until_up = True
    assigned: list[list[int]] = []

    class Notes(UsesDependency):
        def partitions_assigned(self, topic: Topic, partitions: list[int]) -> None:
            assigned.append(sorted(partitions))

    stage = Notes(StageContext(_settings(), "deps"), dependency)
    runner = _runner(stage, broker)
    consumer = runner.consumer
    assert isinstance(consumer, MemoryConsumer)
    task = asyncio.create_task(runner.run(max_batches=2))
    await _until(lambda: consumer.paused)
    # A rebalance hands the stage a partition while it is held: the keepalive's consume() gets
    # job-b from it before it can be paused (librdkafka's order too: assign, then fetch).
    consumer.revoke([(INPUT, 1)])
    _publish(broker, "job-b", partition=1)
    consumer.assign([(INPUT, 1)])
    await _until(lambda: assigned == [[0, 1], [1]])  # the rebalance ran, inside a keepalive poll
    await _until(lambda: (INPUT, 1) in consumer.paused)
    assert [kind for kind, _ in consumer.flow_control][-1] == "pause"
    dependency.up()
    await asyncio.wait_for(task, timeout=10)
    # Consumed while held and not dropped: the next batch had it.
    assert sorted(_outputs(broker)) == ["job-a", "job-b"]
    assert broker.committed_offset(GROUP, INPUT, 1) == 1


class GpuLike(BatchStage):
    name: ClassVar[str] = "gpu"
    inputs: ClassVar[tuple[Topic, ...]] = (Topic.JOBS_ACCEPTED,)
    outputs: ClassVar[tuple[Topic, ...]] = (Topic.JOBS_REFERENCED,)

    def __init__(
        self, ctx: StageContext, dependency: Dependency, poison: str = "", every_record: bool = False
    ):
        super().__init__(ctx)
        self.dependency = dependency
        self.poison = poison
        self.every_record = every_record
        self.calls: list[list[str]] = []

    async def handle_batch(self, records: list[InputRecord]) -> list[Outcome]:
        ids = [r.value["job_id"] for r in records]
        self.calls.append(ids)
        if self.poison in ids:
            raise KeyError("a bug this record triggers for the whole batch")
        outcomes = []
        for record in records:
            try:
                self.dependency.call()
            except ConnectionError as exc:
                if not self.every_record:
                    raise
                # Each record failing on its own, the way a worker reports per-record failures.
                outcomes.append(Outcome(dead_letter=exc))
                continue
            outcomes.append(Outcome.forward(Topic.JOBS_REFERENCED, record.value, "generated"))
        return outcomes


async def test_a_batch_stage_whose_records_all_fail_on_a_dependency_is_not_dead_lettered() -> None:
    broker = MemoryBroker()
    _publish(broker, "job-1", "job-2")
    dependency = Dependency(failures=8)  # four rounds of two
    stage = GpuLike(StageContext(_settings(max_attempts=2), "gpu"), dependency, every_record=True)
    runner = _runner(stage, broker)
    await asyncio.wait_for(runner.run(max_batches=1), timeout=10)
    assert not _letters(broker), "the stage gave up on each, but nothing succeeded: an outage"
    assert sorted(_outputs(broker)) == ["job-1", "job-2"]
    assert len(stage.calls) == 5


async def test_a_whole_batch_failure_that_is_a_records_fault_is_split_to_find_it() -> None:
    broker = MemoryBroker()
    _publish(broker, "job-1", "job-2", "job-poison", "job-4")
    stage = GpuLike(StageContext(_settings(), "gpu"), Dependency(), poison="job-poison")
    runner = _runner(stage, broker)
    await asyncio.wait_for(runner.run(max_batches=1), timeout=10)

    (letter,) = _letters(broker)
    assert letter["original.key"] == "job-poison" and letter["error.class"] == "KeyError"
    assert sorted(_outputs(broker)) == ["job-1", "job-2", "job-4"]
    assert stage.calls[0] == ["job-1", "job-2", "job-poison", "job-4"]
    assert ["job-poison"] in stage.calls, "bisected down to the record"
    assert [c.offset for c in broker.commits] == [4], "the partition moved on: no crash loop"


async def test_a_failed_upload_in_the_prefetching_loop_is_redone_not_a_crash() -> None:
    broker = MemoryBroker()
    _publish(broker, "job-1", "job-2")
    storage = Dependency(failures=3)

    class Uploads(UsesDependency):
        async def handle(self, record: InputRecord) -> Outcome:
            outcome = await super().handle(record)

            async def upload() -> None:
                await asyncio.sleep(0.01)
                storage.call()

            outcome.effects = [asyncio.create_task(upload())]
            return outcome

    stage = Uploads(StageContext(_settings(), "deps"), Dependency())
    stage.prefetch_batches = 1
    runner = _runner(stage, broker)
    task = asyncio.create_task(runner.run())
    await _until(lambda: broker.committed_offset(GROUP, INPUT, 0) == 2)
    runner.request_stop()
    await asyncio.wait_for(task, timeout=10)
    assert not _letters(broker)
    assert sorted(_outputs(broker)) == ["job-1", "job-2"], "redone, produced once"
    assert storage.calls >= 5


async def test_before_batch_failing_on_a_dependency_waits_for_it() -> None:
    broker = MemoryBroker()
    _publish(broker, "job-1")
    restore = Dependency(failures=4, error=TimeoutError)

    class Restores(UsesDependency):
        async def before_batch(self) -> None:
            restore.call()

    runner = _runner(Restores(StageContext(_settings(), "deps"), Dependency()), broker)
    await asyncio.wait_for(runner.run(max_batches=1), timeout=10)
    assert _outputs(broker) == ["job-1"] and restore.calls == 5


async def test_a_partition_revoked_during_an_outage_is_left_to_its_new_owner() -> None:
    broker = MemoryBroker(default_partitions=2)
    _publish(broker, "job-p0", partition=0)
    _publish(broker, "job-p1", partition=1)
    dependency = Dependency()
    dependency.down_until_up = True
    runner = _runner(UsesDependency(StageContext(_settings(), "deps"), dependency), broker)
    consumer = runner.consumer
    assert isinstance(consumer, MemoryConsumer)
    task = asyncio.create_task(runner.run(max_batches=1))
    await _until(lambda: consumer.paused)
    consumer.revoke([(INPUT, 1)])  # another member took it while this one waited
    await _until(lambda: (INPUT, 1) not in {(tp.topic, tp.partition) for tp in consumer.assignment()})
    dependency.up()
    await asyncio.wait_for(task, timeout=10)
    assert _outputs(broker) == ["job-p0"], "job-p1 is its new owner's to produce"
    assert broker.committed_offset(GROUP, INPUT, 0) == 1
    assert broker.committed_offset(GROUP, INPUT, 1) is None
