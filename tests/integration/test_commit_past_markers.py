"""A stage that reads a transactional producer's topic commits past the transaction markers once it
is idle, so its group's lag reaches 0: every transaction ends in a control record no consumer is
handed, and a commit left one past the last record would show a lag of one for ever (whatever
waits for a drained pipeline would wait for ever)."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import ClassVar

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from deploy.local.stack import LocalStack
from processors.config import Settings
from processors.kafka_clients import group_id_for
from processors.runtime import Event, InputRecord, Outcome, Stage
from processors.runtime.codec import Codec
from processors.runtime.runner import StageRunner
from processors.runtime.stage import StageContext
from schemas.topics import Topic, TopicNames

pytestmark = pytest.mark.integration

STAGE = "markertest"
TRANSACTIONS = 3
PER_TRANSACTION = 4


class CountingStage(Stage):
    name: ClassVar[str] = STAGE
    inputs: ClassVar[tuple[Topic, ...]] = (Topic.REVIEW_DECISIONS,)
    outputs: ClassVar[tuple[Topic, ...]] = ()
    prefetch = 0

    async def start(self) -> None:
        self.prefetch_batches = self.prefetch
        self.seen: list[str] = []

    async def handle(self, record: InputRecord) -> Outcome:
        self.seen.append(record.value["job_id"])
        return Outcome(events=[Event(record.value["job_id"], "approved")])


class PrefetchingStage(CountingStage):
    prefetch = 2


def _transactional_topic(stack_settings: Settings) -> tuple[Settings, str, list[str]]:
    """A fresh one-partition decisions topic written in TRANSACTIONS transactions."""
    prefix = f"markers-{uuid.uuid4().hex[:6]}."
    settings = stack_settings.model_copy(
        update={
            "kafka": stack_settings.kafka.model_copy(update={"topic_prefix": prefix, "partitions": 1}),
            "stage": stack_settings.stage.model_copy(update={"session_timeout_ms": 6000}),
        }
    )
    stack = LocalStack(settings, progress=lambda _: None)
    stack.ensure_topics()
    stack.ensure_schemas()
    topic = TopicNames(prefix)(Topic.REVIEW_DECISIONS)
    serde = Codec.of(settings).serde(Topic.REVIEW_DECISIONS)
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap, "transactional.id": prefix})
    producer.init_transactions(10)
    ids: list[str] = []
    for t in range(TRANSACTIONS):
        producer.begin_transaction()
        for n in range(PER_TRANSACTION):
            job_id = f"job-{t}-{n}"
            ids.append(job_id)
            record = {"job_id": job_id, "decision": "APPROVE", "reviewer": "t", "reason": "", "decided_at": 0}
            producer.produce(topic, key=b"k", value=serde.encode(record))
        producer.commit_transaction(10)
    return settings, topic, ids


def _committed_and_end(settings: Settings, topic: str) -> tuple[int, int]:
    consumer = Consumer(
        {"bootstrap.servers": settings.kafka.bootstrap, "group.id": group_id_for(settings, STAGE)}
    )
    try:
        (committed,) = consumer.committed([TopicPartition(topic, 0)], timeout=10)
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        return committed.offset, high
    finally:
        consumer.close()


async def _run_until_caught_up(
    stage: CountingStage, settings: Settings, topic: str, records: int
) -> tuple[int, int]:
    runner = StageRunner(stage)
    task = asyncio.create_task(runner.run())
    committed, high = -1, 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        committed, high = await asyncio.to_thread(_committed_and_end, settings, topic)
        if len(getattr(stage, "seen", [])) >= records and committed == high:
            break
    runner.request_stop()
    await task
    return committed, high


@pytest.mark.parametrize("stage_class", [CountingStage, PrefetchingStage], ids=["in-turn", "prefetching"])
async def test_an_idle_stage_commits_past_the_last_transaction_marker(
    stack_settings: Settings, stage_class: type[CountingStage]
) -> None:
    settings, topic, ids = _transactional_topic(stack_settings)
    stage = stage_class(StageContext(settings, STAGE))

    committed, high = await _run_until_caught_up(stage, settings, topic, len(ids))

    assert stage.seen == ids, "every record once, in order"
    # Records plus one marker per transaction: the commit is at the end, not one short of it.
    assert high == len(ids) + TRANSACTIONS
    assert committed == high


async def test_a_restart_onto_a_commit_at_a_marker_moves_it_to_the_end(stack_settings: Settings) -> None:
    settings, topic, ids = _transactional_topic(stack_settings)
    # Where a stage that handled every record, but never idled, left its commit: on the last marker.
    consumer = Consumer(
        {"bootstrap.servers": settings.kafka.bootstrap, "group.id": group_id_for(settings, STAGE)}
    )
    last_marker = len(ids) + TRANSACTIONS - 1
    consumer.commit(offsets=[TopicPartition(topic, 0, last_marker)], asynchronous=False)
    consumer.close()

    stage = CountingStage(StageContext(settings, STAGE))
    committed, high = await _run_until_caught_up(stage, settings, topic, 0)

    assert stage.seen == [], "nothing is handed over twice"
    assert committed == high == last_marker + 1
