"""The runner's lifecycle on the in-memory clients: a stage whose start() raises makes run()
raise and still closes the consumer (else its threads hang the exit); a revoke reaches the
stage's partitions_revoked hook, by logical topic."""

from __future__ import annotations

import asyncio
import time
from typing import ClassVar

import pytest

from processors.config import KafkaSettings, Settings, StageSettings
from processors.runtime import InputRecord, Outcome, Stage
from processors.runtime.memory import MemoryBroker, MemoryConsumer, MemoryProducer
from processors.runtime.runner import StageRunner
from processors.runtime.stage import StageContext
from schemas.topics import Topic, TopicNames

PREFIX = "t."
INPUT = TopicNames(PREFIX)(Topic.JOBS_ACCEPTED)


class HookStage(Stage):
    name: ClassVar[str] = "hooks"
    inputs: ClassVar[tuple[Topic, ...]] = (Topic.JOBS_ACCEPTED,)
    outputs: ClassVar[tuple[Topic, ...]] = ()

    def __init__(self, ctx: StageContext, fail_start: bool = False) -> None:
        super().__init__(ctx)
        self.fail_start = fail_start
        self.assigned: list[tuple[Topic, list[int]]] = []
        self.revoked: list[tuple[Topic, list[int]]] = []
        self.stopped = False

    async def start(self) -> None:
        if self.fail_start:
            raise RuntimeError("models did not load")

    async def stop(self) -> None:
        self.stopped = True

    def partitions_assigned(self, topic: Topic, partitions: list[int]) -> None:
        self.assigned.append((topic, sorted(partitions)))

    def partitions_revoked(self, topic: Topic, partitions: list[int]) -> None:
        self.revoked.append((topic, sorted(partitions)))

    async def handle(self, record: InputRecord) -> Outcome:
        return Outcome()


def _runner(broker: MemoryBroker, fail_start: bool = False) -> tuple[StageRunner, HookStage, MemoryConsumer]:
    settings = Settings(
        kafka=KafkaSettings(topic_prefix=PREFIX),
        stage=StageSettings(batch_size=1, batch_timeout_s=0.01),
    )
    stage = HookStage(StageContext(settings, "hooks"), fail_start=fail_start)
    consumer = MemoryConsumer(broker, "g")
    return StageRunner(stage, consumer=consumer, producer=MemoryProducer(broker)), stage, consumer


async def test_a_start_that_raises_makes_run_raise_and_closes_the_consumer() -> None:
    runner, stage, consumer = _runner(MemoryBroker(), fail_start=True)
    with pytest.raises(RuntimeError, match="models did not load"):
        await asyncio.wait_for(runner.run(), timeout=10)
    assert consumer.closed
    assert not stage.stopped  # stop() releases what start() opened; nothing was


async def test_a_revoke_reaches_the_stage() -> None:
    broker = MemoryBroker(default_partitions=3)
    broker.create_topic(INPUT)
    runner, stage, consumer = _runner(broker)
    task = asyncio.create_task(runner.run())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not stage.assigned:
        await asyncio.sleep(0.01)
    consumer.revoke([(INPUT, 2), (INPUT, 0)])
    while time.monotonic() < deadline and not stage.revoked:
        await asyncio.sleep(0.01)
    runner.request_stop()
    await asyncio.wait_for(task, timeout=10)
    assert stage.assigned == [(Topic.JOBS_ACCEPTED, [0, 1, 2])]
    assert stage.revoked == [(Topic.JOBS_ACCEPTED, [0, 2])]
    assert consumer.closed and stage.stopped


class OutputStage(HookStage):
    name: ClassVar[str] = "outputs"
    outputs: ClassVar[tuple[Topic, ...]] = (Topic.JOBS_REFERENCED,)

    resolved: list[Topic]  # what the codec has looked up so far, as the test records it

    async def start(self) -> None:
        self.resolved_at_start = list(self.resolved)


def _output_runner(broker: MemoryBroker) -> tuple[StageRunner, OutputStage, MemoryConsumer]:
    settings = Settings(
        kafka=KafkaSettings(topic_prefix=PREFIX),
        stage=StageSettings(batch_size=1, batch_timeout_s=0.01),
    )
    stage = OutputStage(StageContext(settings, "outputs"))
    stage.resolved = []
    consumer = MemoryConsumer(broker, "g")
    return StageRunner(stage, consumer=consumer, producer=MemoryProducer(broker)), stage, consumer


async def _run_until_assigned(runner: StageRunner, stage: HookStage) -> None:
    task = asyncio.create_task(runner.run())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not stage.assigned:
        await asyncio.sleep(0.01)
    runner.request_stop()
    await asyncio.wait_for(task, timeout=10)


async def test_the_output_schemas_are_looked_up_before_the_stage_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from processors.runtime.codec import Codec

    resolve = Codec.resolve_writers
    resolved: list[Topic] = []

    def recording(codec: Codec, topics: list[Topic]) -> None:
        resolve(codec, topics)
        resolved.extend(topics)

    monkeypatch.setattr(Codec, "resolve_writers", recording)
    broker = MemoryBroker()
    broker.create_topic(INPUT)
    runner, stage, _ = _output_runner(broker)
    stage.resolved = resolved
    await _run_until_assigned(runner, stage)
    assert set(stage.resolved_at_start) == {Topic.JOBS_REFERENCED, Topic.PIPELINE_EVENTS, Topic.PIPELINE_DLQ}
    # Looked up and kept: the first record's encode asks the registry nothing more.
    assert runner.codec.serde(Topic.JOBS_REFERENCED).writer_fields()


async def test_a_registry_down_at_start_is_a_warning_and_the_stage_starts(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from processors.runtime.codec import Codec
    from schemas.registry_client import RegistryUnavailableError

    def down(codec: Codec, topics: list[Topic]) -> None:
        raise RegistryUnavailableError("registry: connection refused")

    monkeypatch.setattr(Codec, "resolve_writers", down)
    broker = MemoryBroker()
    broker.create_topic(INPUT)
    runner, stage, consumer = _output_runner(broker)
    await _run_until_assigned(runner, stage)
    assert stage.assigned, "the stage started and joined its group"
    assert "could not resolve the output schemas at start" in caplog.text
    assert consumer.closed and stage.stopped
