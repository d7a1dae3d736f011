"""confluent-kafka client factories with the settings every stage relies on."""

from __future__ import annotations

import socket
from typing import Any

from confluent_kafka import Consumer, Producer

from processors.config import Settings


def producer_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    return {
        "bootstrap.servers": settings.kafka.bootstrap,
        # Idempotent producer: a retried send never duplicates a message within a session.
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "lz4",
        "client.id": f"lightbox-{socket.gethostname()}",
        **extra,
    }


def consumer_config(settings: Settings, group_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "bootstrap.servers": settings.kafka.bootstrap,
        "group.id": group_id,
        # Offsets are committed by the runner after the batch's outputs are delivered.
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": settings.stage.session_timeout_ms,
        "max.poll.interval.ms": 300000,
        "partition.assignment.strategy": "cooperative-sticky",
        "client.id": f"lightbox-{group_id}-{socket.gethostname()}",
        **extra,
    }


def make_producer(settings: Settings, **extra: Any) -> Producer:
    return Producer(producer_config(settings, **extra))


def make_consumer(settings: Settings, group_id: str, **extra: Any) -> Consumer:
    return Consumer(consumer_config(settings, group_id, **extra))


def group_id_for(settings: Settings, stage: str) -> str:
    return f"{settings.kafka.topic_prefix}lightbox.{stage}"
