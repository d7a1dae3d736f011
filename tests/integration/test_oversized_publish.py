"""The issue's reproduction on the real broker and MinIO, through the real publish stage and the real
StageRunner: a review decision with a ~1 MB reason (accepted by the broker) makes publish build an
assets.published record over the producer's limit. That decision is dead-lettered (its original
stored in MinIO, too large for the envelope), a `failed` event is emitted for its job, the
partition moves on and the next job publishes; the stage keeps running. And a record the broker
itself refuses (a topic with a smaller max.message.bytes the runner was not told of) is handled
the same way, from the delivery report."""

from __future__ import annotations

import asyncio
import base64
import copy
import datetime as dt
import hashlib
import os
import time
import uuid
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

from deploy.local.stack import LocalStack
from processors.config import Settings
from processors.kafka_clients import Outgoing, group_id_for, make_producer, produce_and_confirm
from processors.runtime.codec import Codec, TopicSerde
from processors.runtime.dlq import parse_headers
from processors.runtime.runner import StageRunner
from processors.runtime.sizes import MessageLimits, wire_size
from processors.runtime.stage import StageContext
from processors.stages.publish import PublishStage
from processors.storage import ObjectStore
from processors.storage_keys import pending_key
from schemas.topics import Topic, TopicNames
from tests.fixtures.avro_samples import JOB_V1
from tests.support.topics import read_topic

pytestmark = pytest.mark.integration

_CODECS: dict[str, Codec] = {}


def _serde(settings: Settings, topic: Topic) -> TopicSerde:
    """The topic's registry serde under the settings' prefix, one codec (and id cache) per prefix."""
    prefix = settings.kafka.topic_prefix
    if prefix not in _CODECS:
        _CODECS[prefix] = Codec.of(settings)
    return _CODECS[prefix].serde(topic)


def _settings(stack: Settings) -> Settings:
    tag = uuid.uuid4().hex[:8]
    settings = stack.model_copy(
        update={
            "kafka": stack.kafka.model_copy(update={"topic_prefix": f"test-big-{tag}.", "partitions": 1}),
            "review": stack.review.model_copy(
                update={"policy": "hold", "publish_prefix": f"tests/big-{tag}/"}
            ),
            "stage": stack.stage.model_copy(update={"batch_timeout_s": 0.1, "backoff_initial_s": 0.05}),
            # The derivatives here are stand-in bytes, not images: there is nothing to sign.
            "provenance": stack.provenance.model_copy(update={"sign": False}),
        }
    )
    local = LocalStack(settings, progress=lambda _: None)
    local.ensure_topics()
    local.ensure_schemas()  # the prefix's subjects: every topic is registry-framed
    return settings


def _ready_job(store: ObjectStore, tag: str) -> dict[str, Any]:
    job = copy.deepcopy(JOB_V1)
    job["job_id"] = f"big-{tag}-{uuid.uuid4().hex[:8]}"
    job["product"]["sku"] = f"SKU-BIG-{uuid.uuid4().hex[:6]}"
    job["quality"] = {"passed": False, "scores": {"overall": 0.5}, "reasons": ["flagged"], "chosen_index": 0}
    key = f"tests/derivatives/{job['job_id']}/hero.png"
    store.put_bytes(key, b"not really a png", "image/png")
    job["derivatives"] = [
        {
            "name": "hero",
            "key": key,
            "width": 8,
            "height": 8,
            "format": "png",
            "sha256": hashlib.sha256(b"not really a png").hexdigest(),
        }
    ]
    return job


def _decision(settings: Settings, job_id: str, reason: str) -> bytes:
    record = {
        "job_id": job_id,
        "decision": "APPROVE",
        "reviewer": "reviewer@example.com",
        "reason": reason,
        "decided_at": dt.datetime.now(dt.UTC),
    }
    return _serde(settings, Topic.REVIEW_DECISIONS).encode(record)


def _committed(settings: Settings, topic: Topic) -> int:
    name = TopicNames(settings.kafka.topic_prefix)(topic)
    consumer = Consumer(
        {"bootstrap.servers": settings.kafka.bootstrap, "group.id": group_id_for(settings, "publish")}
    )
    try:
        (tp,) = consumer.committed([TopicPartition(name, 0)], timeout=10)
        return int(tp.offset)
    finally:
        consumer.close()


async def _wait(task: asyncio.Task[None], done: Any, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while not await asyncio.to_thread(done):
        assert not task.done(), f"the stage stopped: {task.exception() if task.done() else ''}"
        assert time.monotonic() < deadline, "the stage did not get there in time"
        await asyncio.sleep(0.5)
    assert not task.done(), "the stage must still be running"


async def _run(
    runner: StageRunner,
    settings: Settings,
    store: ObjectStore,
    jobs: list[dict[str, Any]],
    decisions: list[bytes],
) -> None:
    """Held first (assets.ready), then decided (review.decisions), the stage running throughout."""
    task = asyncio.create_task(runner.run())
    try:
        _produce(
            settings,
            Topic.ASSETS_READY,
            [(j["job_id"], _serde(settings, Topic.ASSETS_READY).encode(j)) for j in jobs],
        )
        prefix = settings.kafka.topic_prefix
        await _wait(task, lambda: all(store.exists(pending_key(j["job_id"], prefix)) for j in jobs))
        records = [(j["job_id"], d) for j, d in zip(jobs, decisions, strict=True)]
        _produce(settings, Topic.REVIEW_DECISIONS, records)
        await _wait(task, lambda: _committed(settings, Topic.REVIEW_DECISIONS) == len(decisions))
    finally:
        runner.request_stop()
        await asyncio.wait_for(task, timeout=30)


def _produce(settings: Settings, topic: Topic, records: list[tuple[str, bytes]]) -> None:
    name = TopicNames(settings.kafka.topic_prefix)(topic)
    produce_and_confirm(
        make_producer(settings), [(name, key.encode(), value, None) for key, value in records]
    )


async def test_a_1mb_review_reason_is_dead_lettered_and_publish_keeps_running(stack_settings, store) -> None:
    settings = _settings(stack_settings)
    big, fine = _ready_job(store, "a"), _ready_job(store, "b")
    decisions = TopicNames(settings.kafka.topic_prefix)(Topic.REVIEW_DECISIONS)
    overhead = (
        wire_size(Outgoing(decisions, big["job_id"].encode(), _decision(settings, big["job_id"], ""))) + 3
    )
    huge = _decision(settings, big["job_id"], "r" * (settings.stage.max_message_bytes - overhead))
    assert wire_size(Outgoing(decisions, big["job_id"].encode(), huge)) <= settings.stage.max_message_bytes

    # The decision is accepted by the broker, as in the issue (the producer every tool uses).
    runner = StageRunner(PublishStage(StageContext(settings, "publish")))
    await _run(
        runner, settings, store, [big, fine], [huge, _decision(settings, fine["job_id"], "looks good")]
    )

    published = [
        _serde(settings, Topic.ASSETS_PUBLISHED).decode(m.value())["job_id"]
        for m in read_topic(settings, Topic.ASSETS_PUBLISHED)
    ]
    assert published == [fine["job_id"]], "the next job published; the oversized one never reached the topic"
    (letter,) = read_topic(settings, Topic.PIPELINE_DLQ)
    headers = parse_headers(letter.headers())
    assert headers["original.topic"] == decisions and headers["original.key"] == big["job_id"]
    assert headers["error.class"] == "OutputTooLarge" and "assets.published" in headers["error.message"]
    ref = headers["original.ref"]
    bucket, key = ref.removeprefix("s3://").split("/", 1)
    assert bucket == settings.storage.bucket
    assert store.get_bytes(key) == huge, "the original, from object storage, byte for byte"
    assert headers["original.sha256"] == hashlib.sha256(huge).hexdigest()
    events = [
        _serde(settings, Topic.PIPELINE_EVENTS).decode(m.value())
        for m in read_topic(settings, Topic.PIPELINE_EVENTS)
    ]
    states = [(e["state"], e["reason"]) for e in events if e["job_id"] == big["job_id"]]
    assert ("failed", "output_too_large") in states and ("dead_lettered", "OutputTooLarge") in states
    assert ("published", "") in [(e["state"], e["reason"]) for e in events if e["job_id"] == fine["job_id"]]


async def test_a_record_the_broker_refuses_dead_letters_its_input(stack_settings, store) -> None:
    settings = _settings(stack_settings)
    published = TopicNames(settings.kafka.topic_prefix)(Topic.ASSETS_PUBLISHED)
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap})
    entry = ConfigEntry("max.message.bytes", "50000", incremental_operation=AlterConfigOpType.SET)
    resource = ConfigResource(ResourceType.TOPIC, published, incremental_configs=[entry])
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(30)
    big, fine = _ready_job(store, "c"), _ready_job(store, "d")
    # Incompressible: the broker's limit counts the compressed batch.
    reason = base64.b64encode(os.urandom(60_000)).decode()

    # The runner is not told the topic's limit: only the broker's delivery report says no. Both
    # published records go out in one batch, which the broker refuses whole: the fine one is not
    # dead-lettered for the other's sake.
    runner = StageRunner(PublishStage(StageContext(settings, "publish")), limits=MessageLimits(1_000_000))
    decisions = [_decision(settings, big["job_id"], reason), _decision(settings, fine["job_id"], "ok")]
    await _run(runner, settings, store, [big, fine], decisions)

    assert [
        _serde(settings, Topic.ASSETS_PUBLISHED).decode(m.value())["job_id"]
        for m in read_topic(settings, Topic.ASSETS_PUBLISHED)
    ] == [fine["job_id"]]
    (letter,) = read_topic(settings, Topic.PIPELINE_DLQ)
    headers = parse_headers(letter.headers())
    assert headers["original.key"] == big["job_id"] and headers["error.class"] == "OutputTooLarge"
    assert "refused by Kafka" in headers["error.message"]
    events = [
        _serde(settings, Topic.PIPELINE_EVENTS).decode(m.value())
        for m in read_topic(settings, Topic.PIPELINE_EVENTS)
    ]
    assert ("failed", "output_too_large") in [
        (e["state"], e["reason"]) for e in events if e["job_id"] == big["job_id"]
    ]
