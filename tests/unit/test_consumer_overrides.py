"""A stage's own consumer properties reach the consumer the runner makes for it, and only its
own: the event-log sink waits for a batch's worth of events at the broker, the other stages
keep the shared configuration."""

from __future__ import annotations

from typing import Any

import pytest

from processors.config import KafkaSettings, Settings
from processors.eventlog.sink import SINK_FETCH_MIN_BYTES, EventLogSink
from processors.kafka_clients import consumer_config
from processors.runtime import runner as runner_module
from processors.runtime.memory import MemoryBroker, MemoryProducer
from processors.runtime.runner import StageRunner
from processors.runtime.stage import StageContext
from processors.stages.prompt import PromptStage


@pytest.fixture
def made(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The configuration of every consumer the runner makes (not connected: nothing is polled)."""
    configs: list[dict[str, Any]] = []
    real = runner_module.make_consumer

    def recording(settings: Settings, group_id: str, **extra: Any) -> Any:
        configs.append(consumer_config(settings, group_id, **extra))
        return real(settings, group_id, **extra)

    monkeypatch.setattr(runner_module, "make_consumer", recording)
    return configs


def _settings() -> Settings:
    return Settings(kafka=KafkaSettings(topic_prefix="overrides-test."))


def test_the_sink_waits_for_a_batch_of_events_at_the_broker(made: list[dict[str, Any]]) -> None:
    runner = StageRunner(
        EventLogSink(StageContext(_settings(), "eventlog")), producer=MemoryProducer(MemoryBroker())
    )
    runner.consumer.close()
    (config,) = made
    assert config["fetch.min.bytes"] == SINK_FETCH_MIN_BYTES
    # The shared properties stay: read_committed above all.
    assert config["isolation.level"] == "read_committed"


def test_other_stages_keep_the_shared_configuration(made: list[dict[str, Any]]) -> None:
    runner = StageRunner(
        PromptStage(StageContext(_settings(), "prompt")), producer=MemoryProducer(MemoryBroker())
    )
    runner.consumer.close()
    (config,) = made
    assert "fetch.min.bytes" not in config
