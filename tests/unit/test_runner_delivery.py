"""The real StageRunner on the in-memory broker: produce, confirm, then commit. Event ids are
deterministic and the same on a redelivery; a failed delivery is sent again (only what failed)
and nothing is committed before; commits follow the batches and never move back; and the one
produce loop (kafka_clients.Delivery, produce_and_confirm) that the runner and the gateway tools
share."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import pytest
from confluent_kafka import KafkaError, KafkaException

from processors.config import KafkaSettings, Settings, StageSettings
from processors.kafka_clients import DeliveryFailed, Outgoing, produce_and_confirm
from processors.runtime import InputRecord, Outcome, Stage
from processors.runtime.memory import Commit, MemoryBroker, MemoryConsumer, MemoryProducer
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


class ForwardStage(Stage):
    name: ClassVar[str] = "forward"
    inputs: ClassVar[tuple[Topic, ...]] = (Topic.JOBS_ACCEPTED,)
    outputs: ClassVar[tuple[Topic, ...]] = (Topic.JOBS_REFERENCED,)

    async def handle(self, record: InputRecord) -> Outcome:
        return Outcome.forward(Topic.JOBS_REFERENCED, record.value, "running")


def _runner(broker: MemoryBroker, batch_size: int = 8, producer: MemoryProducer | None = None) -> StageRunner:
    settings = Settings(
        kafka=KafkaSettings(topic_prefix=PREFIX),
        stage=StageSettings(batch_size=batch_size, batch_timeout_s=0.02),
    )
    return StageRunner(
        ForwardStage(StageContext(settings, "forward")),
        consumer=MemoryConsumer(broker, GROUP),
        producer=producer if producer is not None else MemoryProducer(broker),
    )


def _publish(broker: MemoryBroker, *job_ids: str) -> None:
    for job_id in job_ids:
        broker.append(INPUT, JOBS.encode({**JOB_V1, "job_id": job_id}), key=job_id)


def _events(broker: MemoryBroker) -> list[dict[str, Any]]:
    return [EVENTS.decode(m.value()) for m in broker.messages(TOPICS(Topic.PIPELINE_EVENTS))]


def _commits(broker: MemoryBroker) -> list[int]:
    return [c.offset for c in broker.commits if (c.group, c.topic) == (GROUP, INPUT)]


async def _run(runner: StageRunner, batches: int) -> None:
    await asyncio.wait_for(runner.run(max_batches=batches), timeout=10)


async def test_a_delivery_that_fails_is_sent_again_and_committed_only_after() -> None:
    broker = MemoryBroker()
    _publish(broker, "job-1", "job-2")
    producer = MemoryProducer(broker)
    # The broker timing out: used to raise out of the stage (and crash-loop it).
    producer.fail_next(
        TOPICS(Topic.JOBS_REFERENCED), KafkaError(KafkaError._MSG_TIMED_OUT, "timed out"), times=3
    )
    runner = _runner(broker, producer=producer)
    await _run(runner, batches=1)

    assert len(producer.failed) == 3
    outputs = [JOBS.decode(m.value())["job_id"] for m in broker.messages(TOPICS(Topic.JOBS_REFERENCED))]
    assert sorted(outputs) == ["job-1", "job-2"], "each output delivered once: only what failed is resent"
    assert _commits(broker) == [2]
    assert isinstance(runner.consumer, MemoryConsumer)
    assert [kind for kind, _ in runner.consumer.flow_control] == ["pause", "resume"]
    assert runner.metrics.outages.labels("forward")._value.get() == 1


async def test_a_stop_while_the_broker_fails_commits_nothing_and_the_redelivery_repeats_the_event_ids() -> (
    None
):
    broker = MemoryBroker()
    _publish(broker, "job-1", "job-2")
    failing = MemoryProducer(broker)
    failing.fail_next(TOPICS(Topic.JOBS_REFERENCED), times=10_000)
    runner = _runner(broker, producer=failing)
    task = asyncio.create_task(runner.run(max_batches=1))
    assert isinstance(runner.consumer, MemoryConsumer)
    while not runner.consumer.paused:
        await asyncio.sleep(0.01)
    runner.request_stop()
    await asyncio.wait_for(task, timeout=10)
    assert _commits(broker) == [], "no commit while the outputs were undelivered"
    assert not broker.messages(TOPICS(Topic.JOBS_REFERENCED))
    first = {(e["job_id"], e["state"]): e["event_id"] for e in _events(broker)}
    assert set(first) == {("job-1", "running"), ("job-2", "running")}

    # The restarted stage reads the same offsets again (nothing was committed).
    await _run(_runner(broker), batches=1)
    assert _commits(broker) == [2]
    again = [e for e in _events(broker)][2:]
    assert {(e["job_id"], e["state"]): e["event_id"] for e in again} == first, "same ids on a redelivery"


async def test_a_new_message_about_the_same_job_is_a_new_event() -> None:
    broker = MemoryBroker()
    _publish(broker, "job-1", "job-1")
    await _run(_runner(broker), batches=1)
    ids = [e["event_id"] for e in _events(broker)]
    assert len(ids) == 2 and ids[0] != ids[1], "the input's offset is part of the identity"
    assert [e["attributes"]["source"] for e in _events(broker)] == ["jobs.accepted/0/0", "jobs.accepted/0/1"]


async def test_each_batch_commits_after_its_outputs_in_order() -> None:
    broker = MemoryBroker()
    _publish(broker, *(f"job-{n}" for n in range(5)))
    producer = MemoryProducer(broker)
    await _run(_runner(broker, batch_size=2, producer=producer), batches=3)

    assert _commits(broker) == [2, 4, 5]
    outputs = [JOBS.decode(m.value())["job_id"] for m in broker.messages(TOPICS(Topic.JOBS_REFERENCED))]
    assert outputs == [f"job-{n}" for n in range(5)]
    assert len(producer.delivered) == 10, "five outputs and five events, all delivered"


async def test_a_batch_that_trails_the_last_commit_never_moves_it_back() -> None:
    broker = MemoryBroker()
    _publish(broker, *(f"job-{n}" for n in range(4)))
    runner = _runner(broker)
    await runner.process(broker.messages(INPUT))
    assert _commits(broker) == [4]

    # A batch re-fetched after a rebalance, older than what this consumer committed.
    await runner.process(broker.messages(INPUT)[:2])
    assert _commits(broker) == [4]
    assert broker.committed_offset(GROUP, INPUT, 0) == 4


async def test_a_failed_commit_is_a_warning_and_the_next_batch_commits() -> None:
    broker = MemoryBroker()
    _publish(broker, "job-1", "job-2")
    runner = _runner(broker, batch_size=1)
    assert isinstance(runner.consumer, MemoryConsumer)
    runner.consumer.fail_commits(KafkaException(KafkaError(KafkaError._STATE, "rebalance in progress")))
    await _run(runner, batches=2)
    assert broker.commits == [Commit(GROUP, INPUT, 0, 2)]


def test_produce_and_confirm_waits_out_a_full_queue_and_counts_every_message() -> None:
    broker = MemoryBroker()
    producer = MemoryProducer(broker, queue_limit=1)
    sent = produce_and_confirm(
        producer,
        [("a", b"k1", b"v1", None), Outgoing("a", b"k2", b"v2", [("h", b"1")]), ("b", None, b"v3", None)],
    )
    assert sent == 3
    assert [(m.topic(), m.value()) for m in producer.delivered] == [("a", b"v1"), ("a", b"v2"), ("b", b"v3")]
    assert producer.delivered[1].headers() == [("h", b"1")]


def test_produce_and_confirm_sends_to_the_named_partition() -> None:
    broker = MemoryBroker(default_partitions=4)
    producer = MemoryProducer(broker)
    produce_and_confirm(producer, [Outgoing("a", b"same", b"x", partition=3), Outgoing("a", b"same", b"y")])
    by_value = {m.value(): m.partition() for m in producer.delivered}
    assert by_value[b"x"] == 3


def test_produce_and_confirm_raises_naming_the_topic_when_a_delivery_fails() -> None:
    broker = MemoryBroker()
    producer = MemoryProducer(broker)
    producer.fail_next("b", KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART, "unknown topic b"))
    with pytest.raises(DeliveryFailed, match=r"1 of 2 message\(s\) not delivered to b: unknown topic b"):
        produce_and_confirm(producer, [("a", None, b"1", None), ("b", None, b"2", None)])


def test_produce_and_confirm_gives_up_on_a_queue_that_stays_full() -> None:
    class Stuck(MemoryProducer):
        def poll(self, timeout: float = 0) -> int:
            return 0  # never serves a delivery report, so room never frees up

    producer = Stuck(MemoryBroker(), queue_limit=1)
    with pytest.raises(DeliveryFailed, match="queue stayed full"):
        produce_and_confirm(producer, [("a", None, b"1", None), ("a", None, b"2", None)], timeout_s=0.3)
