"""The prefetching runner (the GPU worker's mode) pauses its partitions when its queue is full,
resumes when it drains, and still processes and commits every message exactly in order."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import ClassVar

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from deploy.local.stack import LocalStack
from processors.kafka_clients import group_id_for
from processors.runtime import Event, InputRecord, Outcome, Stage
from processors.runtime.codec import Codec
from processors.runtime.runner import StageRunner
from processors.runtime.stage import StageContext
from schemas.topics import Topic, TopicNames

pytestmark = pytest.mark.integration


class SlowStage(Stage):
    """Stands in for a GPU: each record takes a while, so the fetcher outruns it."""

    name: ClassVar[str] = "slowtest"
    inputs: ClassVar[tuple[Topic, ...]] = (Topic.REVIEW_DECISIONS,)
    outputs: ClassVar[tuple[Topic, ...]] = ()
    seen: list[str]

    async def start(self) -> None:
        self.prefetch_batches = 1
        self.seen = []

    async def handle(self, record: InputRecord) -> Outcome:
        await asyncio.sleep(0.05)
        self.seen.append(record.value["job_id"])
        return Outcome(events=[Event(record.value["job_id"], "approved")])


def _decisions_topic(
    stack_settings, tag: str, ids: list[str], partitions: int, batch_size: int, spread: bool
):
    """A fresh topic prefix with `ids` as review decisions: one key (one partition's order) or
    keyed by id (spread over partitions)."""
    prefix = f"{tag}-{uuid.uuid4().hex[:6]}."
    settings = stack_settings.model_copy(
        update={
            "kafka": stack_settings.kafka.model_copy(
                update={"topic_prefix": prefix, "partitions": partitions}
            ),
            "stage": stack_settings.stage.model_copy(
                update={"batch_size": batch_size, "session_timeout_ms": 6000}
            ),
        }
    )
    stack = LocalStack(settings, progress=lambda _: None)
    stack.ensure_topics()
    stack.ensure_schemas()  # the prefix's subjects: every topic is registry-framed
    topic = TopicNames(prefix)(Topic.REVIEW_DECISIONS)
    serde = Codec.of(settings).serde(Topic.REVIEW_DECISIONS)
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap})
    for job_id in ids:
        record = {"job_id": job_id, "decision": "APPROVE", "reviewer": "t", "reason": "", "decided_at": 0}
        producer.produce(topic, key=(job_id if spread else "same-key").encode(), value=serde.encode(record))
    producer.flush(10)
    return settings, topic


async def test_queue_full_pauses_then_everything_is_processed_in_order(stack_settings) -> None:
    ids = [f"job-{n:03d}" for n in range(40)]
    settings, topic = _decisions_topic(stack_settings, "bp", ids, partitions=1, batch_size=2, spread=False)

    stage = SlowStage(StageContext(settings, "slowtest"))
    runner = StageRunner(stage)
    task = asyncio.create_task(runner.run())
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(getattr(stage, "seen", [])) < len(ids):
        await asyncio.sleep(0.1)
    runner.request_stop()
    await task

    assert stage.seen == ids, "every message, once, in partition order"
    assert stage.ctx.metrics.paused.labels("slowtest")._value.get() >= 1, (
        "the full queue paused the partition"
    )

    consumer = Consumer(
        {"bootstrap.servers": settings.kafka.bootstrap, "group.id": group_id_for(settings, "slowtest")}
    )
    (committed,) = consumer.committed([TopicPartition(topic, 0)], timeout=10)
    consumer.close()
    assert committed.offset == len(ids)


class UploadingStage(Stage):
    """Each record leaves a slow side effect (an upload) behind, like the GPU worker."""

    name: ClassVar[str] = "uploadtest"
    inputs: ClassVar[tuple[Topic, ...]] = (Topic.REVIEW_DECISIONS,)
    outputs: ClassVar[tuple[Topic, ...]] = ()

    async def start(self) -> None:
        self.prefetch_batches = 2
        self.handled_at: dict[str, float] = {}
        self.uploaded_at: dict[str, float] = {}

    async def handle(self, record: InputRecord) -> Outcome:
        job_id = record.value["job_id"]
        self.handled_at[job_id] = time.monotonic()

        async def upload() -> None:
            await asyncio.sleep(0.3)
            self.uploaded_at[job_id] = time.monotonic()

        return Outcome(events=[Event(job_id, "approved")], effects=[asyncio.create_task(upload())])


async def test_next_batch_is_handled_while_the_last_ones_uploads_run(stack_settings) -> None:
    ids = [f"job-{n:02d}" for n in range(8)]
    settings, topic = _decisions_topic(stack_settings, "ov", ids, partitions=1, batch_size=1, spread=False)

    stage = UploadingStage(StageContext(settings, "uploadtest"))
    runner = StageRunner(stage)
    task = asyncio.create_task(runner.run())
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(getattr(stage, "uploaded_at", {})) < len(ids):
        await asyncio.sleep(0.05)
    runner.request_stop()
    await task

    assert list(stage.handled_at) == ids
    overlapped = [
        ids[n] for n in range(len(ids) - 1) if stage.handled_at[ids[n + 1]] < stage.uploaded_at[ids[n]]
    ]
    assert overlapped, "the next batch must be handled while the previous batch's uploads run"
    consumer = Consumer(
        {"bootstrap.servers": settings.kafka.bootstrap, "group.id": group_id_for(settings, "uploadtest")}
    )
    (committed,) = consumer.committed([TopicPartition(topic, 0)], timeout=10)
    consumer.close()
    assert committed.offset == len(ids), "every batch committed, in order, after its uploads"


class SharedSlowStage(SlowStage):
    name: ClassVar[str] = "rebalancetest"
    processed: ClassVar[list[str]] = []

    async def handle(self, record: InputRecord) -> Outcome:
        await asyncio.sleep(0.02)
        SharedSlowStage.processed.append(record.value["job_id"])
        return Outcome(events=[Event(record.value["job_id"], "approved")])


async def test_a_rebalance_mid_stream_loses_nothing_and_commits_to_the_end(stack_settings) -> None:
    ids = [f"job-{n:03d}" for n in range(200)]
    settings, topic = _decisions_topic(stack_settings, "rb", ids, partitions=4, batch_size=2, spread=True)
    SharedSlowStage.processed = []

    first = StageRunner(SharedSlowStage(StageContext(settings, "rebalancetest")))
    first_task = asyncio.create_task(first.run())
    while len(SharedSlowStage.processed) < 20:
        await asyncio.sleep(0.05)
    # A second consumer joins the group mid-stream: partitions move while batches are queued.
    second = StageRunner(SharedSlowStage(StageContext(settings, "rebalancetest")))
    second_task = asyncio.create_task(second.run())
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and set(SharedSlowStage.processed) != set(ids):
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)  # let the last commits land
    first.request_stop()
    second.request_stop()
    await asyncio.gather(first_task, second_task)

    assert set(SharedSlowStage.processed) == set(ids), "every message processed at least once"
    consumer = Consumer(
        {"bootstrap.servers": settings.kafka.bootstrap, "group.id": group_id_for(settings, "rebalancetest")}
    )
    partitions = [TopicPartition(topic, p) for p in range(4)]
    committed = consumer.committed(partitions, timeout=10)
    ends = [consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in partitions]
    consumer.close()
    assert [tp.offset for tp in committed] == ends, "every partition committed to its end"
