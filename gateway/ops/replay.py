"""Replay one job from any stage, optionally with another model.

Every pipeline event records the input message it came from (``source`` = topic/partition/offset),
so the exact record a stage saw is found in the event log and re-read from Kafka. Which of a
stage's inputs carries the job comes from the topology (processors/topology.py): the publish stage
also reads review decisions, and a decision is not a job to replay. The replay is a new job (its
own id, ``replay_of`` naming the original), so the original assets stay as they are.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from processors.config import Settings
from processors.eventlog.reader import EventLogReader
from processors.kafka_clients import DeliveryFailed, make_producer, produce_and_confirm
from processors.runtime.codec import Codec
from processors.topology import JOB_STAGES, UnknownStage, job_input, stage_spec
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
            # Only what the stages themselves saw (librdkafka's default, said aloud).
            "isolation.level": "read_committed",
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


def replay_source(timeline: dict[str, Any], from_stage: str) -> tuple[Topic, int, int]:
    """The job record the stage last read for this job: (topic, partition, offset), from the
    stage's events whose source is the stage's job input."""
    try:
        topic = job_input(stage_spec(from_stage))
    except UnknownStage as exc:
        raise ReplayError(str(exc)) from None
    if topic is None:
        raise ReplayError(
            f"stage {from_stage} does not read jobs; replay from one of: {', '.join(JOB_STAGES)}"
        )
    sources = []
    for event in timeline["events"]:
        source = (event.get("attributes") or {}).get("source") or ""
        logical, _, position = source.partition("/")
        if event["stage"] == from_stage and logical == topic.value and position:
            partition, _, offset = position.partition("/")
            sources.append((topic, int(partition), int(offset)))
    if not sources:
        job_id = timeline.get("job_id", "?")
        raise ReplayError(f"job {job_id} never reached stage {from_stage} (see `lightbox status {job_id}`)")
    return sources[-1]


async def replay_job(
    settings: Settings, job_id: str, from_stage: str, model: str | None = None, backend: str | None = None
) -> tuple[str, str]:
    timeline = await EventLogReader(settings).timeline(job_id)
    topic, partition, offset = replay_source(timeline, from_stage)
    names = TopicNames(settings.kafka.topic_prefix)
    serde = Codec.of(settings).serde(topic)
    job = serde.decode(_read_at(settings, names(topic), partition, offset))
    replayed = rewrite_for_replay(job, model, backend, int(time.time() * 1000))
    message = (names(topic), replayed["job_id"].encode(), serde.encode(replayed), None)
    try:
        produce_and_confirm(make_producer(settings), [message])
    except DeliveryFailed as exc:
        raise ReplayError(f"the replayed job could not be delivered to Kafka: {exc}") from exc
    return names(topic), replayed["job_id"]
