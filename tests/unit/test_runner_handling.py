"""The real StageRunner on the in-memory broker: retries with backoff, dead letters (a record that
keeps failing while the others succeed, permanent, undecodable, a batch handler's one failed
record, an undeclared output) with every dlq.* header, and a whole failed batch that waits for its
dependency, committing nothing until it is back. tests/unit/test_runner_outage.py has the outage
rule in depth."""

from __future__ import annotations

import asyncio
import time
from typing import Any, ClassVar

import pytest

from processors.config import KafkaSettings, Settings, StageSettings
from processors.runtime import BatchStage, Event, InputRecord, Outcome, Output, PermanentError, Stage
from processors.runtime.dlq import parse_headers
from processors.runtime.memory import MemoryBroker, MemoryConsumer, MemoryProducer
from processors.runtime.runner import StageRunner
from processors.runtime.stage import StageContext
from schemas.confluent_serde import memory_serdes
from schemas.topics import Topic, TopicNames
from tests.fixtures.avro_samples import JOB_V1

PREFIX = "t."
TOPICS = TopicNames(PREFIX)
JOBS = memory_serdes(PREFIX)(Topic.JOBS_ACCEPTED)
EVENTS = memory_serdes(PREFIX)(Topic.PIPELINE_EVENTS)
LETTERS = memory_serdes(PREFIX)(Topic.PIPELINE_DLQ)
GROUP = "g"


def _settings(max_attempts: int = 3, batch_size: int = 8, **stage: Any) -> Settings:
    return Settings(
        kafka=KafkaSettings(topic_prefix=PREFIX),
        stage=StageSettings(
            batch_size=batch_size,
            batch_timeout_s=0.02,
            max_attempts=max_attempts,
            backoff_initial_s=0.05,
            backoff_max_s=0.08,
            **stage,
        ),
    )


def _job(job_id: str) -> dict[str, Any]:
    return {**JOB_V1, "job_id": job_id}


def _publish(broker: MemoryBroker, *job_ids: str, raw: bytes | None = None) -> None:
    for job_id in job_ids:
        broker.append(TOPICS(Topic.JOBS_ACCEPTED), JOBS.encode(_job(job_id)), key=job_id)
    if raw is not None:
        broker.append(TOPICS(Topic.JOBS_ACCEPTED), raw, key="raw-key")


async def _run(stage: Stage, broker: MemoryBroker, batches: int = 1) -> StageRunner:
    runner = StageRunner(stage, consumer=MemoryConsumer(broker, GROUP), producer=MemoryProducer(broker))
    await asyncio.wait_for(runner.run(max_batches=batches), timeout=10)
    return runner


def _events(broker: MemoryBroker) -> list[dict[str, Any]]:
    return [EVENTS.decode(m.value()) for m in broker.messages(TOPICS(Topic.PIPELINE_EVENTS))]


def _letters(broker: MemoryBroker) -> list[tuple[dict[str, str], dict[str, Any]]]:
    return [
        (parse_headers(m.headers()), LETTERS.decode(m.value()))
        for m in broker.messages(TOPICS(Topic.PIPELINE_DLQ))
    ]


def _job_ids(broker: MemoryBroker, topic: Topic) -> list[str]:
    return [JOBS.decode(m.value())["job_id"] for m in broker.messages(TOPICS(topic))]


def _committed(broker: MemoryBroker) -> int | None:
    return broker.committed_offset(GROUP, TOPICS(Topic.JOBS_ACCEPTED), 0)


class ForwardStage(Stage):
    """Forwards each job; `failures` says how each job's attempts fail, in order."""

    name: ClassVar[str] = "forward"
    inputs: ClassVar[tuple[Topic, ...]] = (Topic.JOBS_ACCEPTED,)
    outputs: ClassVar[tuple[Topic, ...]] = (Topic.JOBS_REFERENCED,)

    def __init__(self, ctx: StageContext, failures: dict[str, list[BaseException]] | None = None) -> None:
        super().__init__(ctx)
        self.failures = failures or {}
        self.attempted_at: dict[str, list[float]] = {}

    async def handle(self, record: InputRecord) -> Outcome:
        job = record.value
        self.attempted_at.setdefault(job["job_id"], []).append(time.monotonic())
        pending = self.failures.get(job["job_id"], [])
        if pending:
            raise pending.pop(0)
        return Outcome.forward(Topic.JOBS_REFERENCED, job, "running")


def _forward(failures: dict[str, list[BaseException]] | None = None, **settings: Any) -> ForwardStage:
    return ForwardStage(StageContext(_settings(**settings), "forward"), failures)


async def test_a_record_alone_failing_on_a_dependency_waits_with_backoff_then_succeeds() -> None:
    broker = MemoryBroker()
    _publish(broker, "job-a")
    # Nothing else in the batch succeeds: an outage, not the record's fault, however often.
    stage = _forward(
        {"job-a": [ConnectionError("minio down"), TimeoutError("slow")]},
        max_attempts=1,
        outage_event_interval_s=0,
    )
    runner = await _run(stage, broker)

    tries = stage.attempted_at["job-a"]
    assert len(tries) == 3
    # Backoff 0.05 then 0.08 (2x, capped): never retried sooner.
    assert tries[1] - tries[0] >= 0.05 and tries[2] - tries[1] >= 0.08
    assert _job_ids(broker, Topic.JOBS_REFERENCED) == ["job-a"]
    assert not _letters(broker)
    events = _events(broker)
    assert [(e["state"], e["reason"]) for e in events] == [
        ("retry", "ConnectionError"),
        ("retry", "TimeoutError"),
        ("running", ""),
    ]
    assert events[0]["detail"] == "minio down"
    assert len({e["event_id"] for e in events}) == 3, "each retry is its own event"
    assert runner.metrics.retries.labels("forward")._value.get() == 2
    assert _committed(broker) == 1
    assert isinstance(runner.consumer, MemoryConsumer)
    assert [kind for kind, _ in runner.consumer.flow_control] == ["pause", "resume"]


async def test_a_record_that_keeps_failing_while_the_others_succeed_is_dead_lettered() -> None:
    broker = MemoryBroker()
    _publish(broker, "job-bad", "job-next")
    stage = _forward({"job-bad": [ConnectionError(f"down {n}") for n in range(3)]}, max_attempts=3)
    await _run(stage, broker)

    assert len(stage.attempted_at["job-bad"]) == 3
    ((headers, letter),) = _letters(broker)
    assert set(headers) == {
        "original.topic",
        "original.partition",
        "original.offset",
        "original.key",
        "stage",
        "error.class",
        "error.message",
        "attempts",
        "first.failure.ms",
        "last.failure.ms",
        "fault",
        "error.kind",
    }
    # A dependency's error, but the others got through: the record's own fault.
    assert (headers["fault"], headers["error.kind"]) == ("record", "dependency")
    assert headers["original.topic"] == "t.jobs.accepted"
    assert (headers["original.partition"], headers["original.offset"]) == ("0", "0")
    assert headers["original.key"] == "job-bad"
    assert headers["stage"] == "forward"
    assert (headers["error.class"], headers["error.message"]) == ("ConnectionError", "down 2")
    assert headers["attempts"] == "3"
    # First and last failure are the first and third attempts: the backoff lies between them.
    assert int(headers["last.failure.ms"]) - int(headers["first.failure.ms"]) >= 100
    assert letter["original_value"] == JOBS.encode(_job("job-bad"))
    assert letter["attempts"] == 3 and letter["stage"] == "forward"

    states = [(e["job_id"], e["state"]) for e in _events(broker)]
    assert states[:3] == [("job-bad", "retry"), ("job-bad", "retry"), ("job-bad", "dead_lettered")]
    dead = next(e for e in _events(broker) if e["state"] == "dead_lettered")
    assert dead["attributes"]["dlq_source"] == "t.jobs.accepted/0/0"
    assert dead["attributes"]["attempts"] == "3"
    assert _job_ids(broker, Topic.JOBS_REFERENCED) == ["job-next"], "the poison did not block the next"
    assert _committed(broker) == 2


async def test_a_permanent_error_is_dead_lettered_at_once() -> None:
    broker = MemoryBroker()
    _publish(broker, "job-p")
    stage = _forward({"job-p": [PermanentError("bad data"), ConnectionError("never reached")]})
    await _run(stage, broker)

    assert len(stage.attempted_at["job-p"]) == 1, "no retry for a permanent error"
    ((headers, _),) = _letters(broker)
    assert (headers["error.class"], headers["attempts"]) == ("PermanentError", "1")
    assert (headers["fault"], headers["error.kind"]) == ("record", "record")
    assert headers["first.failure.ms"] == headers["last.failure.ms"]
    assert [e["state"] for e in _events(broker)] == ["dead_lettered"]


async def test_undecodable_bytes_are_dead_lettered_with_their_key_and_bytes() -> None:
    broker = MemoryBroker()
    _publish(broker, "job-ok", raw=b"\x00not avro")
    stage = _forward()
    await _run(stage, broker)

    ((headers, letter),) = _letters(broker)
    assert headers["error.class"] == "SerdeError"
    assert headers["original.offset"] == "1" and headers["original.key"] == "raw-key"
    assert letter["original_value"] == b"\x00not avro"
    assert "job-ok" in stage.attempted_at and len(stage.attempted_at) == 1, "never handed to the stage"
    dead = [e for e in _events(broker) if e["state"] == "dead_lettered"]
    assert [e["job_id"] for e in dead] == ["raw-key"], "the key stands in for the unknown job id"
    assert _committed(broker) == 2


class SneakyStage(ForwardStage):
    """Declares jobs.referenced, but sends one job to generation.requests."""

    name: ClassVar[str] = "sneaky"

    async def handle(self, record: InputRecord) -> Outcome:
        job = record.value
        if job["job_id"] == "job-sneak":
            return Outcome(
                outputs=[Output(Topic.GENERATION_REQUESTS, job["job_id"], job)],
                events=[Event(job["job_id"], "running")],
            )
        return await super().handle(record)


async def test_an_output_to_an_undeclared_topic_is_refused_and_dead_lettered() -> None:
    broker = MemoryBroker()
    _publish(broker, "job-sneak", "job-fine")
    await _run(SneakyStage(StageContext(_settings(), "sneaky")), broker)

    assert not broker.messages(TOPICS(Topic.GENERATION_REQUESTS)), "nothing reached the undeclared topic"
    assert _job_ids(broker, Topic.JOBS_REFERENCED) == ["job-fine"]
    ((headers, _),) = _letters(broker)
    assert headers["error.class"] == "UndeclaredOutput"
    assert "generation.requests" in headers["error.message"] and "sneaky" in headers["error.message"]
    assert headers["original.key"] == "job-sneak"
    # Events and dead letters are the runtime's own: always allowed.
    assert ("job-fine", "running") in [(e["job_id"], e["state"]) for e in _events(broker)]


def test_a_stage_that_declares_no_outputs_cannot_run() -> None:
    class Undeclared(Stage):
        name: ClassVar[str] = "undeclared"
        inputs: ClassVar[tuple[Topic, ...]] = (Topic.JOBS_ACCEPTED,)

        async def handle(self, record: InputRecord) -> Outcome:
            return Outcome()

    broker = MemoryBroker()
    with pytest.raises(TypeError, match="outputs"):
        StageRunner(
            Undeclared(StageContext(_settings(), "undeclared")),
            consumer=MemoryConsumer(broker, GROUP),
            producer=MemoryProducer(broker),
        )


class GpuLikeStage(BatchStage):
    """Sees the whole batch; one record can fail on its own, or the whole batch can fail."""

    name: ClassVar[str] = "gpu"
    inputs: ClassVar[tuple[Topic, ...]] = (Topic.JOBS_ACCEPTED,)
    outputs: ClassVar[tuple[Topic, ...]] = (Topic.JOBS_REFERENCED,)

    def __init__(self, ctx: StageContext, batch_failures: int = 0) -> None:
        super().__init__(ctx)
        self.batch_failures = batch_failures
        self.calls: list[list[str]] = []

    async def handle_batch(self, records: list[InputRecord]) -> list[Outcome]:
        self.calls.append([r.value["job_id"] for r in records])
        if len(self.calls) <= self.batch_failures:
            raise ConnectionError("every backend is down")
        outcomes = []
        for record in records:
            job = record.value
            if job["job_id"] == "job-oom":
                failed = Event(job["job_id"], "failed", reason="generation_error")
                outcomes.append(
                    Outcome(events=[failed], dead_letter=RuntimeError("out of memory"), attempts=2)
                )
            else:
                outcomes.append(Outcome.forward(Topic.JOBS_REFERENCED, job, "generated"))
        return outcomes


async def test_a_batch_stage_record_that_fails_alone_is_dead_lettered_alone() -> None:
    broker = MemoryBroker()
    _publish(broker, "job-1", "job-oom", "job-3")
    stage = GpuLikeStage(StageContext(_settings(), "gpu"))
    await _run(stage, broker)

    assert stage.calls == [["job-1", "job-oom", "job-3"]], "one call for the whole batch"
    assert _job_ids(broker, Topic.JOBS_REFERENCED) == ["job-1", "job-3"]
    ((headers, _),) = _letters(broker)
    assert (headers["original.key"], headers["original.offset"]) == ("job-oom", "1")
    assert (headers["error.class"], headers["error.message"]) == ("RuntimeError", "out of memory")
    assert headers["attempts"] == "2", "the batch handler's own attempt count"
    states = [e["state"] for e in _events(broker) if e["job_id"] == "job-oom"]
    assert states == ["failed", "dead_lettered"], "its own failure event, then the dead letter's"
    assert _committed(broker) == 3


async def test_a_failing_batch_is_retried_whole_then_succeeds() -> None:
    broker = MemoryBroker()
    _publish(broker, "job-1", "job-2")
    stage = GpuLikeStage(StageContext(_settings(max_attempts=3), "gpu"), batch_failures=2)
    runner = await _run(stage, broker)

    assert stage.calls == [["job-1", "job-2"]] * 3
    assert _job_ids(broker, Topic.JOBS_REFERENCED) == ["job-1", "job-2"]
    # Each of the two records retried twice.
    assert runner.metrics.retries.labels("gpu")._value.get() == 4
    assert _committed(broker) == 2


async def test_a_batch_failing_far_past_max_attempts_waits_for_its_dependency() -> None:
    broker = MemoryBroker()
    _publish(broker, "job-1", "job-2")
    # Used to raise after max_attempts, crash the stage and crash-loop it under the supervisor.
    stage = GpuLikeStage(StageContext(_settings(max_attempts=2), "gpu"), batch_failures=12)
    runner = await _run(stage, broker)

    assert len(stage.calls) == 13
    assert not _letters(broker), "a dependency outage is not poison: nothing dead-lettered"
    assert _job_ids(broker, Topic.JOBS_REFERENCED) == ["job-1", "job-2"]
    assert [c.offset for c in broker.commits] == [2], "one commit, after the dependency came back"
    assert isinstance(runner.consumer, MemoryConsumer)
    assert [kind for kind, _ in runner.consumer.flow_control] == ["pause", "resume"]
