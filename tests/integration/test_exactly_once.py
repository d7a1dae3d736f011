"""Exactly once on the real broker: a stage process SIGKILLed after producing its batch's outputs
and before committing the transaction leaves nothing a read_committed reader sees; restarted (the
same copy, so the same transactional.id) it aborts what was left open and produces each output
once, with the input offsets committed in the same transaction."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, TopicPartition

from deploy.local.stack import LocalStack
from processors.config import Settings
from processors.kafka_clients import group_id_for, make_producer, produce_and_confirm
from processors.runtime.codec import Codec
from schemas.topics import Topic, TopicNames
from tests.integration.eos_child import STAGE

pytestmark = pytest.mark.integration

JOBS = [f"eos-{n}" for n in range(6)]
ROOT = Path(__file__).resolve().parents[2]


def _read(settings: Settings, topic: Topic, isolation: str) -> list[Any]:
    """The whole topic as a reader with this isolation level sees it, up to its end."""
    name = TopicNames(settings.kafka.topic_prefix)(topic)
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap,
            "group.id": f"eos-reader-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": isolation,
        }
    )
    try:
        parts = consumer.list_topics(name, timeout=10).topics[name].partitions
        consumer.assign([TopicPartition(name, p, 0) for p in parts])
        found: list[Any] = []
        at_end: set[int] = set()
        deadline = time.monotonic() + 15
        while len(at_end) < len(parts) and time.monotonic() < deadline:
            for message in consumer.consume(100, 0.5):
                if message.error() is None:
                    found.append(message)
                elif message.error().code() == KafkaError._PARTITION_EOF:
                    at_end.add(message.partition())
        return found
    finally:
        consumer.close()


def _approved(settings: Settings, isolation: str) -> Counter[str]:
    events = Codec.of(settings).serde(Topic.PIPELINE_EVENTS)
    decoded = [events.decode(m.value()) for m in _read(settings, Topic.PIPELINE_EVENTS, isolation)]
    return Counter(e["job_id"] for e in decoded if e["state"] == "approved")


def _committed(settings: Settings) -> int:
    topic = TopicNames(settings.kafka.topic_prefix)(Topic.REVIEW_DECISIONS)
    # read_uncommitted: a read_committed consumer's lookup waits while offsets are pending in an
    # open transaction (KIP-447's stable offsets), which is what a successor relies on.
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap,
            "group.id": group_id_for(settings, STAGE),
            "isolation.level": "read_uncommitted",
        }
    )
    try:
        (found,) = consumer.committed([TopicPartition(topic, 0)], timeout=10)
        return found.offset
    finally:
        consumer.close()


def _child(prefix: str, mode: str, timeout_s: float = 90) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "tests.integration.eos_child", prefix, mode, str(len(JOBS))],
        cwd=ROOT,
        capture_output=True,
        timeout=timeout_s,
    )


def test_a_stage_killed_between_produce_and_commit_publishes_each_output_once(
    stack_settings: Settings,
) -> None:
    prefix = f"test-eos-{uuid.uuid4().hex[:8]}."
    settings = stack_settings.model_copy(
        update={"kafka": stack_settings.kafka.model_copy(update={"topic_prefix": prefix, "partitions": 1})}
    )
    stack = LocalStack(settings, progress=lambda _: None)
    stack.ensure_topics()
    stack.ensure_schemas()
    topic = TopicNames(prefix)(Topic.REVIEW_DECISIONS)
    serde = Codec.of(settings).serde(Topic.REVIEW_DECISIONS)
    record = {"decision": "APPROVE", "reviewer": "t", "reason": "", "decided_at": 0}
    produce_and_confirm(
        make_producer(settings), [(topic, b"k", serde.encode({**record, "job_id": j}), None) for j in JOBS]
    )

    killed = _child(prefix, "kill")
    assert killed.returncode == -signal.SIGKILL, killed.stdout.decode()[-3000:]
    # Produced, uncommitted: on the broker, invisible to read_committed, the offsets unmoved.
    assert sum(_approved(settings, "read_uncommitted").values()) >= 1
    assert _approved(settings, "read_committed") == Counter()
    assert _committed(settings) < 0

    restarted = _child(prefix, "run")
    assert restarted.returncode == 0, restarted.stdout.decode()[-3000:]
    assert _approved(settings, "read_committed") == Counter({j: 1 for j in JOBS}), "each exactly once"
    assert _committed(settings) == len(JOBS)
