"""The real StageRunner, exactly once, on the in-memory broker's transactions: a batch's outputs,
events and input offsets commit together or not at all. A stage killed between producing and
committing leaves nothing visible and its successor produces the batch once; a transaction that
must be aborted is sent again whole; a zombie of an older group generation is fenced; a fenced
producer stops the stage instead of looping."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from typing import Any, ClassVar

import pytest
from confluent_kafka import KafkaError

from processors.config import KafkaSettings, Settings, StageSettings
from processors.kafka_clients import transactional_id_for
from processors.runtime import InputRecord, Outcome, Stage
from processors.runtime.memory import Hang, MemoryBroker, MemoryConsumer, MemoryProducer
from processors.runtime.runner import StageRunner
from processors.runtime.stage import StageContext
from processors.runtime.transact import TransactionFatal
from schemas.confluent_serde import memory_serdes
from schemas.topics import Topic, TopicNames
from tests.fixtures.avro_samples import JOB_V1

PREFIX = "t."
TOPICS = TopicNames(PREFIX)
INPUT = TOPICS(Topic.JOBS_ACCEPTED)
OUTPUT = TOPICS(Topic.JOBS_REFERENCED)
JOBS = memory_serdes(PREFIX)(Topic.JOBS_ACCEPTED)
EVENTS = memory_serdes(PREFIX)(Topic.PIPELINE_EVENTS)
GROUP = "g"
TXID = "g.forward-0"


class ForwardStage(Stage):
    name: ClassVar[str] = "forward"
    inputs: ClassVar[tuple[Topic, ...]] = (Topic.JOBS_ACCEPTED,)
    outputs: ClassVar[tuple[Topic, ...]] = (Topic.JOBS_REFERENCED,)

    async def handle(self, record: InputRecord) -> Outcome:
        return Outcome.forward(Topic.JOBS_REFERENCED, record.value, "running")


class Killed(BaseException):
    """A SIGKILL at that point: nothing after it runs, no cleanup of our own."""


def _settings(**stage: Any) -> Settings:
    return Settings(
        kafka=KafkaSettings(topic_prefix=PREFIX),
        stage=StageSettings(
            batch_size=8, batch_timeout_s=0.02, backoff_initial_s=0.01, backoff_max_s=0.02, **stage
        ),
    )


def _runner(
    broker: MemoryBroker, producer: MemoryProducer | None = None, consumer: MemoryConsumer | None = None
) -> StageRunner:
    return StageRunner(
        ForwardStage(StageContext(_settings(), "forward")),
        # `is None`: an empty MemoryProducer is falsy (its len() is its queue).
        consumer=consumer if consumer is not None else MemoryConsumer(broker, GROUP),
        producer=producer if producer is not None else MemoryProducer(broker, transactional_id=TXID),
        events_producer=MemoryProducer(broker),
    )


def _publish(broker: MemoryBroker, *job_ids: str) -> None:
    for job_id in job_ids:
        broker.append(INPUT, JOBS.encode({**JOB_V1, "job_id": job_id}), key=job_id)


def _outputs(broker: MemoryBroker) -> list[str]:
    return sorted(JOBS.decode(m.value())["job_id"] for m in broker.messages(OUTPUT))


def _events(broker: MemoryBroker) -> Counter[tuple[str, str]]:
    decoded = [EVENTS.decode(m.value()) for m in broker.messages(TOPICS(Topic.PIPELINE_EVENTS))]
    return Counter((e["job_id"], e["state"]) for e in decoded)


async def _run(runner: StageRunner, batches: int) -> None:
    await asyncio.wait_for(runner.run(max_batches=batches), timeout=10)


async def test_a_batch_commits_its_outputs_events_and_offsets_in_one_transaction() -> None:
    broker = MemoryBroker()
    _publish(broker, "job-1", "job-2", "job-3")
    runner = _runner(broker)
    assert runner.exactly_once
    await _run(runner, batches=1)

    assert _outputs(broker) == ["job-1", "job-2", "job-3"]
    assert _events(broker) == Counter({(j, "running"): 1 for j in ("job-1", "job-2", "job-3")})
    assert broker.committed_offset(GROUP, INPUT, 0) == 3
    # One transaction for the batch, not one per record.
    assert broker.transactions == [(TXID, "commit")]


async def test_a_stage_killed_between_produce_and_commit_leaves_nothing_visible_and_is_redone_once() -> None:
    broker = MemoryBroker()
    _publish(broker, "job-1", "job-2")
    crashing = MemoryProducer(broker, transactional_id=TXID)
    crashing.fail_transaction("commit", Killed("SIGKILL before commit_transaction"))
    with pytest.raises(Killed):
        await _run(_runner(broker, producer=crashing), batches=1)

    # Produced, but in a transaction never committed: in the log, invisible, offsets unmoved.
    assert len(broker.messages(OUTPUT, read_committed=False)) == 2
    assert _outputs(broker) == []
    assert broker.committed_offset(GROUP, INPUT, 0) is None

    # A read_committed reader waits at the open transaction (the last stable offset) ...
    reader = MemoryConsumer(broker, "reader")
    reader.subscribe([OUTPUT])
    assert reader.consume(10, 0) == []

    # ... until the restarted copy (same transactional.id) aborts it and does the batch again.
    await _run(_runner(broker), batches=1)
    assert broker.transactions == [(TXID, "abort"), (TXID, "commit")]
    assert _outputs(broker) == ["job-1", "job-2"], "each output visible exactly once"
    assert _events(broker) == Counter({("job-1", "running"): 1, ("job-2", "running"): 1})
    assert broker.committed_offset(GROUP, INPUT, 0) == 2
    assert sorted(JOBS.decode(m.value())["job_id"] for m in reader.consume(10, 0)) == ["job-1", "job-2"]


async def test_a_transaction_that_must_be_aborted_is_sent_again_whole_without_handling_again() -> None:
    broker = MemoryBroker()
    _publish(broker, "job-1", "job-2")
    producer = MemoryProducer(broker, transactional_id=TXID)
    # A delivery that fails for good inside the transaction makes it abortable.
    producer.fail_next(OUTPUT, KafkaError(KafkaError._MSG_TIMED_OUT, "timed out"))
    runner = _runner(broker, producer=producer)
    handled: list[str] = []
    original = runner.stage.handle

    async def counting(record: InputRecord) -> Outcome:
        handled.append(record.job_id)
        return await original(record)

    runner.stage.handle = counting  # type: ignore[method-assign]
    await _run(runner, batches=1)

    assert broker.transactions == [(TXID, "abort"), (TXID, "commit")]
    assert _outputs(broker) == ["job-1", "job-2"]
    assert sorted(handled) == ["job-1", "job-2"], "the prepared outputs are sent again, not redone"
    assert broker.committed_offset(GROUP, INPUT, 0) == 2


async def test_a_retriable_commit_failure_is_retried_and_an_abortable_one_resent() -> None:
    broker = MemoryBroker()
    _publish(broker, "job-1")
    producer = MemoryProducer(broker, transactional_id=TXID)
    producer.fail_transaction("commit", KafkaError(KafkaError._TIMED_OUT, "timed out", retriable=True))
    producer.fail_transaction(
        "send_offsets", KafkaError(KafkaError.COORDINATOR_NOT_AVAILABLE, "moving", retriable=True)
    )
    await _run(_runner(broker, producer=producer), batches=1)
    assert broker.transactions == [(TXID, "commit")]
    assert _outputs(broker) == ["job-1"]

    _publish(broker, "job-2")
    again = MemoryProducer(broker, transactional_id=TXID)
    again.fail_transaction(
        "commit",
        KafkaError(KafkaError.INVALID_TXN_STATE, "aborted by the coordinator", txn_requires_abort=True),
    )
    await _run(_runner(broker, producer=again), batches=1)
    assert broker.transactions[-2:] == [(TXID, "abort"), (TXID, "commit")]
    assert _outputs(broker) == ["job-1", "job-2"]
    assert broker.committed_offset(GROUP, INPUT, 0) == 2


async def test_a_zombie_of_an_older_generation_is_fenced_and_publishes_nothing() -> None:
    broker = MemoryBroker()
    _publish(broker, "job-1", "job-2")
    consumer = MemoryConsumer(broker, GROUP)
    runner = _runner(broker, consumer=consumer)
    original = runner.stage.handle

    async def rebalanced_meanwhile(record: InputRecord) -> Outcome:
        # While this batch is in hand the group moves on (another member took the partition):
        # this member learns of it only at its next poll.
        if broker.generation(GROUP) == consumer.generation:
            broker.new_generation(GROUP)
            consumer.revoke([(INPUT, 0)])
        return await original(record)

    runner.stage.handle = rebalanced_meanwhile  # type: ignore[method-assign]
    await _run(runner, batches=1)

    assert (TXID, "commit") not in broker.transactions, "the stale generation's offsets were refused"
    assert _outputs(broker) == [], "the new owner publishes the batch, not the zombie"
    assert broker.committed_offset(GROUP, INPUT, 0) is None


async def test_a_fenced_producer_stops_the_stage_instead_of_looping() -> None:
    broker = MemoryBroker()
    _publish(broker, "job-1")
    old = MemoryProducer(broker, transactional_id=TXID)
    runner = _runner(broker, producer=old)
    original = runner.stage.handle

    async def fenced_meanwhile(record: InputRecord) -> Outcome:
        MemoryProducer(broker, transactional_id=TXID).init_transactions()  # a newer copy started
        return await original(record)

    runner.stage.handle = fenced_meanwhile  # type: ignore[method-assign]
    with pytest.raises(TransactionFatal):
        await _run(runner, batches=1)
    assert _outputs(broker) == []
    assert broker.committed_offset(GROUP, INPUT, 0) is None
    assert isinstance(runner.consumer, MemoryConsumer) and runner.consumer.closed


async def test_a_record_refused_inside_a_transaction_dead_letters_its_input_only() -> None:
    broker = MemoryBroker()
    # A limit the runner does not know: the broker refuses the record after it was produced.
    broker.topic_limits[OUTPUT] = len(JOBS.encode(JOB_V1)) + 1000
    big = {**JOB_V1, "job_id": "job-big", "idempotency_key": "x" * 3000}
    broker.append(INPUT, JOBS.encode({**JOB_V1, "job_id": "job-1"}), key="job-1")
    broker.append(INPUT, JOBS.encode(big), key="job-big")
    await _run(_runner(broker), batches=1)

    assert _outputs(broker) == ["job-1"]
    letters = broker.messages(TOPICS(Topic.PIPELINE_DLQ))
    assert len(letters) == 1 and letters[0].key() == b"job-big"
    assert broker.committed_offset(GROUP, INPUT, 0) == 2
    assert broker.transactions[-1] == (TXID, "commit")


async def test_exactly_once_is_a_setting_and_a_plain_producer_stays_at_least_once() -> None:
    broker = MemoryBroker()
    _publish(broker, "job-1", "job-2")
    await _run(_runner(broker), batches=1)
    plain = StageRunner(
        ForwardStage(StageContext(_settings(), "forward")),
        consumer=MemoryConsumer(broker, GROUP),
        producer=MemoryProducer(broker),
    )
    assert not plain.exactly_once, "a plain producer passed in: at least once, as before"
    settings = Settings(kafka=KafkaSettings(topic_prefix=PREFIX, exactly_once=False, instance="forward-0"))
    assert not settings.kafka.exactly_once
    assert transactional_id_for(settings, "forward") == "t.lightbox.forward.forward-0"


def _renewing_runner(broker: MemoryBroker, stuck: MemoryProducer) -> tuple[StageRunner, list[MemoryProducer]]:
    """A runner on `stuck` that makes (and lists) a new producer of the same id when one sticks."""
    made: list[MemoryProducer] = []

    def renew() -> MemoryProducer:
        made.append(MemoryProducer(broker, transactional_id=TXID))
        return made[-1]

    runner = StageRunner(
        ForwardStage(StageContext(_settings(delivery_timeout_s=0.2), "forward")),
        consumer=MemoryConsumer(broker, GROUP),
        producer=stuck,
        events_producer=MemoryProducer(broker),
        renew_producer=renew,
    )
    return runner, made


async def test_a_stuck_send_offsets_call_replaces_the_producer_and_the_batch_commits_once() -> None:
    # librdkafka#5456: send_offsets_to_transaction() can block past its timeout for good.
    broker = MemoryBroker()
    _publish(broker, "job-1", "job-2")
    released = threading.Event()
    stuck = MemoryProducer(broker, transactional_id=TXID)
    stuck.fail_transaction("send_offsets", Hang(released))
    runner, made = _renewing_runner(broker, stuck)
    try:
        await _run(runner, batches=1)
    finally:
        released.set()
    assert len(made) == 1 and runner.producer is made[0]
    # The new producer's init fenced the stuck one and aborted its open transaction.
    assert broker.transactions == [(TXID, "abort"), (TXID, "commit")]
    assert _outputs(broker) == ["job-1", "job-2"]
    assert broker.committed_offset(GROUP, INPUT, 0) == 2


async def test_a_commit_that_went_through_but_never_answered_is_not_sent_again() -> None:
    # The stuck call is commit_transaction() itself, done on the coordinator: sending the batch
    # again through the new producer would publish it twice.
    broker = MemoryBroker()
    _publish(broker, "job-1", "job-2")
    released = threading.Event()
    stuck = MemoryProducer(broker, transactional_id=TXID)
    stuck.fail_transaction("commit", Hang(released, after=True))
    runner, made = _renewing_runner(broker, stuck)
    try:
        await _run(runner, batches=1)
    finally:
        released.set()
    assert len(made) == 1 and runner.producer is made[0]
    assert broker.transactions == [(TXID, "commit")], "one transaction, never a second"
    assert _outputs(broker) == ["job-1", "job-2"]
    assert broker.committed_offset(GROUP, INPUT, 0) == 2


async def test_a_producer_that_lost_every_broker_is_replaced_before_its_next_transaction() -> None:
    broker = MemoryBroker()
    _publish(broker, "job-1")
    made: list[MemoryProducer] = []

    def renew() -> MemoryProducer:
        made.append(MemoryProducer(broker, transactional_id=TXID))
        return made[-1]

    runner = StageRunner(
        ForwardStage(StageContext(_settings(), "forward")),
        consumer=MemoryConsumer(broker, GROUP),
        producer=MemoryProducer(broker, transactional_id=TXID),
        events_producer=MemoryProducer(broker),
        renew_producer=renew,
    )
    runner.txn.on_error(KafkaError(KafkaError._ALL_BROKERS_DOWN, "all brokers down"))
    await _run(runner, batches=1)
    assert len(made) == 1 and runner.producer is made[0], "replaced up front, not after a stuck call"
    assert broker.transactions == [(TXID, "commit")]
    assert _outputs(broker) == ["job-1"]
