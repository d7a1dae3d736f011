"""No silent gap, on the real broker: a stage that resumes past retention (its committed offset's
records deleted before it read them; librdkafka moves it to the log start without a word) records
the range it lost as an `offset_reset` event on pipeline.events."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any, ClassVar

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from deploy.local.stack import LocalStack
from processors.kafka_clients import group_id_for, make_producer, produce_and_confirm
from processors.runtime import Event, InputRecord, Outcome, Stage
from processors.runtime.codec import Codec
from processors.runtime.runner import StageRunner
from processors.runtime.stage import StageContext
from schemas.topics import Topic, TopicNames

pytestmark = pytest.mark.integration


class Seen(Stage):
    name: ClassVar[str] = "gaptest"
    inputs: ClassVar[tuple[Topic, ...]] = (Topic.REVIEW_DECISIONS,)
    outputs: ClassVar[tuple[Topic, ...]] = ()
    seen: list[str]

    async def start(self) -> None:
        self.seen = []

    async def handle(self, record: InputRecord) -> Outcome:
        self.seen.append(record.value["job_id"])
        return Outcome(events=[Event(record.value["job_id"], "approved")])


def _events(settings: Any) -> list[dict[str, Any]]:
    name = TopicNames(settings.kafka.topic_prefix)(Topic.PIPELINE_EVENTS)
    events = Codec.of(settings).serde(Topic.PIPELINE_EVENTS)
    consumer = Consumer(
        {"bootstrap.servers": settings.kafka.bootstrap, "group.id": f"r-{uuid.uuid4().hex[:6]}"}
    )
    try:
        parts = consumer.list_topics(name, timeout=10).topics[name].partitions
        consumer.assign([TopicPartition(name, p, 0) for p in parts])
        found, idle = [], time.monotonic()
        while time.monotonic() - idle < 3:
            batch = consumer.consume(100, 0.5)
            if batch:
                idle = time.monotonic()
            found.extend(events.decode(m.value()) for m in batch if not m.error())
        return found
    finally:
        consumer.close()


async def test_resuming_past_retention_is_recorded_with_the_lost_range(stack_settings) -> None:
    prefix = f"test-gap-{uuid.uuid4().hex[:8]}."
    settings = stack_settings.model_copy(
        update={"kafka": stack_settings.kafka.model_copy(update={"topic_prefix": prefix, "partitions": 1})}
    )
    stack = LocalStack(settings, progress=lambda _: None)
    stack.ensure_topics()
    stack.ensure_schemas()  # the prefix's subjects: every topic is registry-framed
    topic = TopicNames(prefix)(Topic.REVIEW_DECISIONS)
    serde = Codec.of(settings).serde(Topic.REVIEW_DECISIONS)
    ids = [f"gap-{n}" for n in range(7)]
    record = {"decision": "APPROVE", "reviewer": "t", "reason": "", "decided_at": 0}
    produce_and_confirm(
        make_producer(settings), [(topic, b"same", serde.encode({**record, "job_id": i}), None) for i in ids]
    )
    # The stage had read two of them; then retention deleted offsets 2..4 before it came back.
    group = group_id_for(settings, "gaptest")
    committer = Consumer({"bootstrap.servers": settings.kafka.bootstrap, "group.id": group})
    committer.commit(offsets=[TopicPartition(topic, 0, 2)], asynchronous=False)
    committer.close()
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap})
    for future in admin.delete_records([TopicPartition(topic, 0, 5)]).values():
        future.result(30)

    stage = Seen(StageContext(settings, "gaptest"))
    runner = StageRunner(stage)
    task = asyncio.create_task(runner.run())
    deadline = time.monotonic() + 60
    while len(getattr(stage, "seen", [])) < 2:
        assert time.monotonic() < deadline and not task.done()
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.0)  # the batch's commit and events
    runner.request_stop()
    await asyncio.wait_for(task, timeout=30)

    assert stage.seen == ["gap-5", "gap-6"], "librdkafka moved on to the log start"
    (gap,) = [e for e in _events(settings) if e["state"] == "offset_reset"]
    assert gap["stage"] == "gaptest" and gap["reason"] == "retention"
    assert (gap["attributes"]["topic"], gap["attributes"]["partition"]) == (topic, "0")
    assert (gap["attributes"]["from"], gap["attributes"]["to"], gap["attributes"]["lost"]) == ("2", "5", "3")
