"""The one consumer configuration under both group protocols, and the share group's."""

from __future__ import annotations

import pytest

from processors.config import Settings
from processors.kafka_clients import CLASSIC_ONLY, consumer_config, share_consumer_config, share_group_configs


def test_the_new_protocol_is_the_default_and_drops_what_librdkafka_refuses_with_it() -> None:
    settings = Settings()
    config = consumer_config(settings, "g", **{"heartbeat.interval.ms": 1000})
    assert config["group.protocol"] == "consumer"
    # librdkafka fails the consumer's creation on any of these with group.protocol=consumer.
    assert not set(CLASSIC_ONLY) & set(config)
    # What exactly once needs stays: no auto commit, committed reads only.
    assert config["enable.auto.commit"] is False
    assert config["isolation.level"] == "read_committed"


def test_the_classic_protocol_keeps_its_session_and_assignor() -> None:
    settings = Settings()
    settings.kafka.group_protocol = "classic"
    config = consumer_config(settings, "g")
    assert config["group.protocol"] == "classic"
    assert config["session.timeout.ms"] == settings.stage.session_timeout_ms
    assert config["partition.assignment.strategy"] == "cooperative-sticky"


@pytest.mark.parametrize("protocol", ["classic", "consumer"])
def test_librdkafka_accepts_the_configuration(protocol: str) -> None:
    from confluent_kafka import Consumer

    settings = Settings()
    settings.kafka.group_protocol = protocol  # type: ignore[assignment]
    Consumer(consumer_config(settings, "g")).close()


def test_share_members_acknowledge_each_record_and_the_group_reads_committed_from_the_start() -> None:
    from confluent_kafka import ShareConsumer

    settings = Settings()
    config = share_consumer_config(settings, "g")
    assert config["share.acknowledgement.mode"] == "explicit"
    assert config["max.poll.records"] == settings.generation.max_batch
    ShareConsumer(config).close()
    group = share_group_configs(settings)
    assert group["share.auto.offset.reset"] == "earliest"
    assert group["share.isolation.level"] == "read_committed"
    # The stage dead-letters a record before the broker would archive it unseen.
    assert int(group["share.delivery.count.limit"]) == settings.generation.share_max_deliveries + 1
