"""`lightbox lag`: how far behind each stage's consumer group is, per input topic."""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient

from processors.config import Settings
from processors.kafka_clients import group_id_for, share_group_stages
from processors.topology import STAGES
from schemas.topics import TopicNames


@dataclass(frozen=True)
class Lag:
    stage: str
    topic: str
    committed: int  # messages the group has finished (sum of committed offsets)
    end: int  # sum of high watermarks
    lag: int


def stage_lags(settings: Settings) -> list[Lag]:
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap})
    probe = Consumer({"bootstrap.servers": settings.kafka.bootstrap, "group.id": "lightbox.lag-probe"})
    names = TopicNames(settings.kafka.topic_prefix)
    lags = []
    try:
        metadata = probe.list_topics(timeout=10).topics
        # A share group has no committed offsets to measure lag by (and confluent-kafka has no
        # share-group admin call yet): such a stage is left out, not shown with a false lag.
        shared = share_group_stages(settings)
        for spec in STAGES:
            if spec.name in shared:
                continue
            group = group_id_for(settings, spec.name)
            for topic in spec.inputs:
                name = names(topic)
                if name not in metadata:
                    continue
                partitions = [TopicPartition(name, p) for p in metadata[name].partitions]
                request = [ConsumerGroupTopicPartitions(group, partitions)]
                committed = admin.list_consumer_group_offsets(request)[group].result().topic_partitions
                done = end = 0
                for tp in committed:
                    _, high = probe.get_watermark_offsets(TopicPartition(name, tp.partition), timeout=10)
                    end += high
                    done += tp.offset if tp.offset >= 0 else 0
                lags.append(Lag(spec.name, name, done, end, end - done))
    finally:
        probe.close()
    return lags
