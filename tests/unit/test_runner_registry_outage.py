"""A schema registry that cannot answer while a batch is decoded is an outage, not the message's
fault: the real StageRunner on the in-memory broker holds the partitions, retries the decode and
handles the record once the registry answers; nothing is dead-lettered."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import pytest

from processors.config import KafkaSettings, Settings, StageSettings
from processors.runtime import InputRecord, Outcome, Stage
from processors.runtime import runner as runner_module
from processors.runtime.codec import SerdeFactory, TopicSerde
from processors.runtime.memory import MemoryBroker, MemoryConsumer, MemoryProducer
from processors.runtime.runner import StageRunner
from processors.runtime.stage import StageContext
from schemas.confluent_serde import memory_serdes
from schemas.registry_client import RegistryUnavailableError
from schemas.topics import Topic, TopicNames
from tests.fixtures.avro_samples import JOB_V1

# The other runner tests' prefix, serdes made in the test: the in-process registries give ids in
# registration order, so a prefix of its own registered at import would shift theirs.
PREFIX = "t."
TOPICS = TopicNames(PREFIX)


class FlakyDecode:
    """The topic's real registry serde, whose decode finds the registry down `failures` times."""

    def __init__(self, inner: TopicSerde, failures: int) -> None:
        self.inner = inner
        self.failures = failures
        self.calls = 0

    def encode(self, record: dict[str, Any]) -> bytes:
        return self.inner.encode(record)

    def decode(self, payload: bytes | None) -> dict[str, Any]:
        self.calls += 1
        if self.failures > 0:
            self.failures -= 1
            raise RegistryUnavailableError("registry at mock://lightbox-unit: connection refused")
        return self.inner.decode(payload)

    def writer_fields(self) -> set[str]:
        return self.inner.writer_fields()


class Forward(Stage):
    name: ClassVar[str] = "forward"
    inputs: ClassVar[tuple[Topic, ...]] = (Topic.JOBS_ACCEPTED,)
    outputs: ClassVar[tuple[Topic, ...]] = (Topic.JOBS_REFERENCED,)

    def __init__(self, ctx: StageContext) -> None:
        super().__init__(ctx)
        self.handled: list[str] = []

    async def handle(self, record: InputRecord) -> Outcome:
        self.handled.append(record.value["job_id"])
        return Outcome.forward(Topic.JOBS_REFERENCED, record.value, "running")


async def test_a_registry_outage_while_decoding_is_retried_never_dead_lettered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    serdes = memory_serdes(PREFIX)
    flaky = FlakyDecode(serdes(Topic.JOBS_ACCEPTED), failures=2)

    def factory(_settings: Settings) -> SerdeFactory:
        return lambda topic: flaky if topic is Topic.JOBS_ACCEPTED else serdes(topic)

    monkeypatch.setattr(runner_module, "serde_factory", factory)
    broker = MemoryBroker()
    broker.append(TOPICS(Topic.JOBS_ACCEPTED), serdes(Topic.JOBS_ACCEPTED).encode(JOB_V1), key="job-1")
    settings = Settings(
        kafka=KafkaSettings(topic_prefix=PREFIX),
        stage=StageSettings(batch_size=4, batch_timeout_s=0.02, backoff_initial_s=0.01, backoff_max_s=0.02),
    )
    stage = Forward(StageContext(settings, "forward"))
    runner = StageRunner(stage, consumer=MemoryConsumer(broker, "g"), producer=MemoryProducer(broker))

    await asyncio.wait_for(runner.run(max_batches=1), timeout=10)

    assert flaky.calls == 3, "decoded again after each refusal, until the registry answered"
    assert not broker.messages(TOPICS(Topic.PIPELINE_DLQ)), "the message was fine: not dead-lettered"
    assert stage.handled == [JOB_V1["job_id"]]
    outputs = [
        serdes(Topic.JOBS_REFERENCED).decode(m.value())
        for m in broker.messages(TOPICS(Topic.JOBS_REFERENCED))
    ]
    assert [o["job_id"] for o in outputs] == [JOB_V1["job_id"]]
    assert [c.offset for c in broker.commits] == [1]
