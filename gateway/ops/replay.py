"""Replay one job from any stage, optionally with another model.

Every pipeline event records the input message it came from (``source`` = topic/partition/offset),
so the exact record a stage saw is found in the event log and re-read from Kafka. The replay is a
new job (its own id, ``replay_of`` naming the original), so the original assets stay as they are.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from processors.config import Settings
from processors.eventlog.reader import EventLogReader
from processors.kafka_clients import DeliveryFailed, make_producer, produce_and_confirm
from schemas.serde import AvroSerde
from schemas.topics import Topic, TopicNames

REPLAY_NAMESPACE = uuid.UUID("0b6c1f0e-7d55-4c8a-a0a4-7c9d8f3a2e61")


class ReplayError(RuntimeError):
    pass


def _read_at(settings: Settings, topic: str, partition: int, offset: int) -> bytes:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap,
            "group.id": "lightbox.replay-tool",
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.assign([TopicPartition(topic, partition, offset)])
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            message = consumer.poll(1.0)
            if message is None or message.error():
                continue
            if message.offset() == offset:
                return message.value()
            break
        raise ReplayError(f"{topic}/{partition}/{offset} is no longer in Kafka (retention?)")
    finally:
        consumer.close()


def rewrite_for_replay(
    job: dict[str, Any], model: str | None, backend: str | None, now_ms: int
) -> dict[str, Any]:
    replayed = dict(job)
    replayed["replay_of"] = job["job_id"]
    replayed["job_id"] = str(uuid.uuid5(REPLAY_NAMESPACE, f"{job['job_id']}|{now_ms}"))
    replayed["submitted_at"] = now_ms
    if model:
        if not job.get("route"):
            raise ReplayError("--model needs a job that has been routed: replay from generate or later")
        route = dict(job["route"])
        route["model"] = model
        route["backend"] = backend or route["backend"]
        route["rule_id"] = f"replay-override:{route['rule_id']}"
        replayed["route"] = route
    return replayed


async def replay_job(
    settings: Settings, job_id: str, from_stage: str, model: str | None = None, backend: str | None = None
) -> tuple[str, str]:
    timeline = await EventLogReader(settings).timeline(job_id)
    sources = [e["attributes"].get("source") for e in timeline["events"] if e["stage"] == from_stage]
    sources = [s for s in sources if s]
    if not sources:
        raise ReplayError(f"job {job_id} never reached stage {from_stage} (see `lightbox status {job_id}`)")
    logical, partition, offset = sources[-1].rsplit("/", 2)
    names = TopicNames(settings.kafka.topic_prefix)
    topic = Topic(logical)
    serde = AvroSerde("job")
    job = serde.decode(_read_at(settings, names(topic), int(partition), int(offset)))
    replayed = rewrite_for_replay(job, model, backend, int(time.time() * 1000))
    message = (names(topic), replayed["job_id"].encode(), serde.encode(replayed), None)
    try:
        produce_and_confirm(make_producer(settings), [message])
    except DeliveryFailed as exc:
        raise ReplayError(f"the replayed job could not be delivered to Kafka: {exc}") from exc
    return names(topic), replayed["job_id"]
