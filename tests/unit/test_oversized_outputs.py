"""Outputs that cannot be produced never crash a stage: the real StageRunner on the in-memory broker.

An output over the size limit (checked before producing), or one the producer or the broker
refuses for what it is, dead-letters its INPUT with the reason and a `failed` event for its job,
and the partition moves on. A dead letter too large to carry its original stores it in object
storage and carries a pointer. Event texts are clipped. The issue's reproduction: a review
decision with a 1 MB reason makes the real publish stage build an assets.published record over the
limit; that decision is dead-lettered and the next job still publishes.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import hashlib
from typing import Any, ClassVar

from confluent_kafka import KafkaError, KafkaException, Producer

from processors.config import KafkaSettings, ProvenanceSettings, ReviewSettings, Settings, StageSettings
from processors.kafka_clients import Outgoing
from processors.runtime import Event, InputRecord, Outcome, PermanentError, Stage
from processors.runtime.dlq import DeadLetter, parse_headers
from processors.runtime.memory import MemoryBroker, MemoryConsumer, MemoryProducer, MemoryStore
from processors.runtime.runner import StageRunner
from processors.runtime.sizes import MessageLimits, wire_size
from processors.runtime.stage import StageContext
from processors.stages.publish import PublishStage
from processors.storage_keys import pending_key
from schemas.confluent_serde import memory_serdes
from schemas.topics import Topic, TopicNames
from tests.fixtures.avro_samples import JOB_V1

PREFIX = "t."
TOPICS = TopicNames(PREFIX)
INPUT = TOPICS(Topic.JOBS_ACCEPTED)
OUTPUT = TOPICS(Topic.JOBS_REFERENCED)
JOBS = memory_serdes(PREFIX)(Topic.JOBS_ACCEPTED)
EVENTS = memory_serdes(PREFIX)(Topic.PIPELINE_EVENTS)
LETTERS = memory_serdes(PREFIX)(Topic.PIPELINE_DLQ)
DECISIONS = memory_serdes(PREFIX)(Topic.REVIEW_DECISIONS)
GROUP = "g"


def _settings(max_message_bytes: int = 20_000, **extra: Any) -> Settings:
    return Settings(
        kafka=KafkaSettings(topic_prefix=PREFIX),
        stage=StageSettings(
            batch_size=8,
            batch_timeout_s=0.02,
            backoff_initial_s=0.02,
            backoff_max_s=0.05,
            max_message_bytes=max_message_bytes,
        ),
        # The derivatives here are stand-in bytes, not images: there is nothing to sign.
        provenance=ProvenanceSettings(sign=False),
        **extra,
    )


def _job(job_id: str, padding: int = 0) -> dict[str, Any]:
    job = copy.deepcopy(JOB_V1)
    job["job_id"] = job_id
    if padding:
        job["product"]["attributes"] = {"note": "x" * padding}
    return job


def _publish(broker: MemoryBroker, *jobs: dict[str, Any]) -> None:
    for job in jobs:
        broker.append(INPUT, JOBS.encode(job), key=job["job_id"])


def _events(broker: MemoryBroker) -> list[dict[str, Any]]:
    return [EVENTS.decode(m.value()) for m in broker.messages(TOPICS(Topic.PIPELINE_EVENTS))]


def _letters(broker: MemoryBroker) -> list[tuple[dict[str, str], dict[str, Any]]]:
    return [
        (parse_headers(m.headers()), LETTERS.decode(m.value()))
        for m in broker.messages(TOPICS(Topic.PIPELINE_DLQ))
    ]


def _outputs(broker: MemoryBroker) -> list[str]:
    return [JOBS.decode(m.value())["job_id"] for m in broker.messages(OUTPUT)]


class Inflate(Stage):
    """Forwards each job; `big` ones come out padded, `poison` ones raise a permanent error."""

    name: ClassVar[str] = "inflate"
    inputs: ClassVar[tuple[Topic, ...]] = (Topic.JOBS_ACCEPTED,)
    outputs: ClassVar[tuple[Topic, ...]] = (Topic.JOBS_REFERENCED,)
    big: ClassVar[dict[str, int]] = {}
    poison: ClassVar[set[str]] = set()

    async def handle(self, record: InputRecord) -> Outcome:
        job = record.value
        if job["job_id"] in self.poison:
            raise PermanentError("cannot process this job")
        if job["job_id"] in self.big:
            job["product"]["attributes"] = {"note": "y" * self.big[job["job_id"]]}
        return Outcome.forward(Topic.JOBS_REFERENCED, job, "running")


def _stage(settings: Settings, big: dict[str, int] | None = None, poison: set[str] | None = None) -> Inflate:
    stage = Inflate(StageContext(settings, "inflate"))
    stage.big = big or {}
    stage.poison = poison or set()
    return stage


async def _run(
    stage: Stage,
    broker: MemoryBroker,
    producer: MemoryProducer | None = None,
    store: MemoryStore | None = None,
    batches: int = 1,
) -> StageRunner:
    stage.ctx.store = store if store is not None else MemoryStore()  # type: ignore[misc]
    runner = StageRunner(
        stage,
        consumer=MemoryConsumer(broker, GROUP),
        producer=producer if producer is not None else MemoryProducer(broker),
    )
    await asyncio.wait_for(runner.run(max_batches=batches), timeout=20)
    return runner


def _failed(broker: MemoryBroker, job_id: str) -> dict[str, Any]:
    (event,) = [e for e in _events(broker) if e["job_id"] == job_id and e["state"] == "failed"]
    return event


async def test_an_output_over_the_limit_dead_letters_its_input_and_the_partition_moves_on() -> None:
    broker = MemoryBroker()
    _publish(broker, _job("job-big"), _job("job-next"))
    producer = MemoryProducer(broker)
    runner = await _run(_stage(_settings(), big={"job-big": 30_000}), broker, producer)

    assert _outputs(broker) == ["job-next"], "the oversized record was never sent"
    assert all(
        wire_size(Outgoing(m.topic(), m.key(), m.value(), m.headers())) <= 20_000 for m in producer.delivered
    )
    ((headers, letter),) = _letters(broker)
    assert headers["original.key"] == "job-big" and headers["error.class"] == "OutputTooLarge"
    assert "jobs.referenced" in headers["error.message"] and "20000-byte limit" in headers["error.message"]
    assert letter["original_value"] == JOBS.encode(_job("job-big")), "the input, not the output"
    failed = _failed(broker, "job-big")
    assert failed["reason"] == "output_too_large"
    states = [e["state"] for e in _events(broker) if e["job_id"] == "job-big"]
    assert states == ["failed", "dead_lettered"], "the handler's own events are not sent either"
    assert broker.committed_offset(GROUP, INPUT, 0) == 2
    assert runner.metrics.refused_outputs.labels("inflate")._value.get() == 1


async def test_event_texts_are_clipped_so_events_always_fit() -> None:
    class Chatty(Inflate):
        async def handle(self, record: InputRecord) -> Outcome:
            job_id = record.value["job_id"]
            attributes = {f"k{n}" * 50: "v" * 10_000 for n in range(100)}
            return Outcome(
                events=[
                    Event(
                        job_id, "rejected", reason="r" * 5000, detail="d" * 1_000_000, attributes=attributes
                    )
                ]
            )

    broker = MemoryBroker()
    _publish(broker, _job("job-1"))
    await _run(Chatty(StageContext(_settings(max_message_bytes=1_000_000), "inflate")), broker)

    (event,) = _events(broker)
    assert event["state"] == "rejected" and not _letters(broker)
    assert len(event["detail"]) <= 2000 and "more characters" in event["detail"]
    assert len(event["reason"]) <= 200
    assert len(event["attributes"]) <= 33  # 32 of the handler's, and the runtime's source
    assert all(len(k) <= 100 and len(v) <= 1000 for k, v in event["attributes"].items())


async def test_a_record_the_broker_refuses_after_produce_dead_letters_its_input() -> None:
    broker = MemoryBroker(topic_limits={OUTPUT: 8_000})  # the runner does not know this limit
    _publish(broker, _job("job-big"), _job("job-next"))
    await _run(_stage(_settings(max_message_bytes=1_000_000), big={"job-big": 10_000}), broker)

    assert _outputs(broker) == ["job-next"]
    ((headers, _),) = _letters(broker)
    assert headers["original.key"] == "job-big" and headers["error.class"] == "OutputTooLarge"
    assert "too large" in headers["error.message"].lower()
    assert _failed(broker, "job-big")["reason"] == "output_too_large"
    assert broker.committed_offset(GROUP, INPUT, 0) == 2, "no crash, no restart loop: moved on"


async def test_a_record_the_producer_refuses_on_the_spot_dead_letters_its_input() -> None:
    broker = MemoryBroker()
    _publish(broker, _job("job-big"), _job("job-next"))
    # A producer configured below the stage's setting (make_producer's extra, say).
    producer = MemoryProducer(broker, max_message_bytes=8_000)
    await _run(_stage(_settings(max_message_bytes=1_000_000), big={"job-big": 10_000}), broker, producer)
    assert _outputs(broker) == ["job-next"]
    ((headers, _),) = _letters(broker)
    assert headers["original.key"] == "job-big"
    assert broker.committed_offset(GROUP, INPUT, 0) == 2


async def test_a_broker_refusal_that_is_not_about_size_is_output_refused() -> None:
    broker = MemoryBroker()
    _publish(broker, _job("job-1"))
    producer = MemoryProducer(broker)
    # Refused, and refused again when sent alone: the record's own.
    producer.fail_next(OUTPUT, KafkaError(KafkaError.INVALID_RECORD, "Broker: Invalid record"), times=2)
    await _run(_stage(_settings()), broker, producer)
    ((headers, _),) = _letters(broker)
    assert headers["error.class"] == "OutputRefused" and "Invalid record" in headers["error.message"]
    assert _failed(broker, "job-1")["reason"] == "output_refused"


async def test_a_dead_letter_too_large_for_its_original_stores_it_and_points_at_it() -> None:
    broker = MemoryBroker()
    near_limit = _job("job-poison", padding=19_550)
    raw = JOBS.encode(near_limit)
    assert wire_size(Outgoing(INPUT, b"job-poison", raw)) <= 20_000 < len(raw) + 500
    _publish(broker, near_limit, _job("job-next"))
    store = MemoryStore(bucket="lightbox")
    # Storage is down at first: the letter waits for it, it is not sent without its original.
    store.fail_next(ConnectionError("minio down"), times=3)
    runner = await _run(_stage(_settings(), poison={"job-poison"}), broker, store=store)

    ((headers, letter),) = _letters(broker)
    key = "dead-letters/t.jobs.accepted/0/0/inflate.value"
    assert headers["original.ref"] == f"s3://lightbox/{key}"
    assert store.objects[key] == raw, "the original, byte for byte"
    assert headers["original.size"] == str(len(raw))
    assert headers["original.sha256"] == hashlib.sha256(raw).hexdigest()
    assert letter["original_value"] is None and letter["original_key"] == b"job-poison"
    assert headers["error.class"] == "PermanentError"
    dead = next(e for e in _events(broker) if e["state"] == "dead_lettered")
    assert dead["attributes"]["original_ref"] == f"s3://lightbox/{key}"
    assert _outputs(broker) == ["job-next"]
    assert broker.committed_offset(GROUP, INPUT, 0) == 2
    assert runner.metrics.offloaded_letters.labels("inflate")._value.get() == 1


async def test_a_dead_letter_the_broker_refuses_is_sent_again_without_its_original() -> None:
    broker = MemoryBroker(topic_limits={TOPICS(Topic.PIPELINE_DLQ): 3_000})
    _publish(broker, _job("job-poison", padding=5_000))
    store = MemoryStore()
    await _run(_stage(_settings(max_message_bytes=1_000_000), poison={"job-poison"}), broker, store=store)
    ((headers, letter),) = _letters(broker)
    assert letter["original_value"] is None and headers["original.ref"].endswith("/0/0/inflate.value")
    assert len(store.objects) == 1
    assert broker.committed_offset(GROUP, INPUT, 0) == 1


def test_the_pointer_travels_in_the_envelope_once_the_schema_has_the_field() -> None:
    """dlq_envelope v1 has no original_ref field (header only); v2, the newest, carries it."""
    fields = LETTERS.writer_fields()
    assert "original_ref" in fields
    letter = DeadLetter("t", 0, 1, b"k", b"v" * 10, "publish", "OutputTooLarge", "big", 1, 10, 20)
    offloaded, objects = letter.offloaded("lightbox")
    decoded = LETTERS.decode(LETTERS.encode(offloaded.record(fields)))
    assert decoded["original_ref"] == "s3://lightbox/dead-letters/t/0/1/publish.value"
    assert objects == [("dead-letters/t/0/1/publish.value", b"v" * 10)]
    # And a v1 writer still encodes it (the field left out), read back with no pointer.
    v1_fields = {f["name"] for f in LETTERS.writer(1).parsed["fields"]}
    assert "original_ref" not in v1_fields
    assert LETTERS.decode(LETTERS.encode(offloaded.record(v1_fields), version=1))["original_ref"] is None


def test_wire_size_is_what_librdkafka_checks() -> None:
    """A message exactly at message.max.bytes is accepted by a real librdkafka producer, one byte
    more is refused: the runner's check and the producer's agree (no broker needed)."""
    producer = Producer(
        {"bootstrap.servers": "127.0.0.1:9", "message.max.bytes": 5_000, "message.timeout.ms": 1000}
    )
    key = b"key"
    at_limit = Outgoing("t", key, b"v" * (5_000 - len(key) - 36))
    assert wire_size(at_limit) == 5_000 and MessageLimits(5_000).fits(at_limit)
    producer.produce("t", key=key, value=at_limit.value)
    over = Outgoing("t", key, at_limit.value + b"v")  # type: ignore[operator]
    assert not MessageLimits(5_000).fits(over)
    try:
        producer.produce("t", key=key, value=over.value)
    except KafkaException as exc:
        assert exc.args[0].code() == KafkaError.MSG_SIZE_TOO_LARGE
    else:
        raise AssertionError("librdkafka accepted a message over message.max.bytes")
    producer.purge()
    producer.flush(0)


def test_the_brokers_topic_limit_counts_the_batch_header() -> None:
    limits = MessageLimits(1_000_000, {"small": 10_000})
    assert limits.limit("small") < 10_000 - 61
    assert limits.limit("other") == 1_000_000


# -- the reproduction, through the real publish stage ----------------------------------


def _ready(store: MemoryStore, job_id: str) -> dict[str, Any]:
    job = _job(job_id)
    job["product"]["sku"] = f"SKU-{job_id}"
    job["quality"] = {"passed": False, "scores": {"overall": 0.5}, "reasons": ["flagged"], "chosen_index": 0}
    key = f"assets/{job_id}/hero.png"
    store.put_bytes(key, b"png bytes")
    job["derivatives"] = [
        {
            "name": "hero",
            "key": key,
            "width": 8,
            "height": 8,
            "format": "png",
            "sha256": hashlib.sha256(b"png bytes").hexdigest(),
        }
    ]
    return job


def _decision(job_id: str, reason: str) -> bytes:
    return DECISIONS.encode(
        {
            "job_id": job_id,
            "decision": "APPROVE",
            "reviewer": "rev",
            "reason": reason,
            "decided_at": dt.datetime.now(dt.UTC),
        }
    )


async def test_a_1mb_review_reason_dead_letters_the_decision_and_publish_keeps_running() -> None:
    settings = _settings(
        max_message_bytes=1_000_000, review=ReviewSettings(policy="hold", publish_prefix="published/")
    )
    broker = MemoryBroker()
    store = MemoryStore()
    ready_topic, decisions_topic = TOPICS(Topic.ASSETS_READY), TOPICS(Topic.REVIEW_DECISIONS)
    big, fine = _ready(store, "job-big"), _ready(store, "job-fine")
    for job in (big, fine):
        broker.append(ready_topic, JOBS.encode(job), key=job["job_id"])
    stage = PublishStage(StageContext(settings, "publish"))
    await _run(stage, broker, store=store)
    assert store.exists(pending_key("job-big", PREFIX)) and store.exists(pending_key("job-fine", PREFIX))

    # The largest reason a decision can carry and still be accepted (under the producer's limit)...
    overhead = (
        wire_size(Outgoing(decisions_topic, b"job-big", _decision("job-big", ""))) + 3
    )  # + the length varint
    decision = _decision("job-big", "r" * (1_000_000 - overhead))
    assert wire_size(Outgoing(decisions_topic, b"job-big", decision)) <= 1_000_000
    broker.append(decisions_topic, decision, key="job-big")
    broker.append(decisions_topic, _decision("job-fine", "looks good"), key="job-fine")
    stage = PublishStage(StageContext(settings, "publish"))
    runner = await _run(stage, broker, store=store)

    # ... makes an assets.published record over it: that decision is dead-lettered, with its
    # original stored aside (the envelope around a ~1 MB original is over the limit too).
    published = [JOBS.decode(m.value())["job_id"] for m in broker.messages(TOPICS(Topic.ASSETS_PUBLISHED))]
    assert published == ["job-fine"], "the next job still publishes"
    ((headers, letter),) = _letters(broker)
    assert headers["original.topic"] == decisions_topic and headers["error.class"] == "OutputTooLarge"
    assert letter["original_value"] is None
    assert store.objects[headers["original.ref"].removeprefix("s3://lightbox/")] == decision
    failed = _failed(broker, "job-big")
    assert failed["reason"] == "output_too_large" and "assets.published" in failed["detail"]
    assert broker.committed_offset(GROUP, decisions_topic, 0) == 2, "the partition moved on"
    assert runner.metrics.refused_outputs.labels("publish")._value.get() == 1


async def test_a_batch_refused_whole_for_one_record_dead_letters_only_that_one() -> None:
    """The broker refuses a record batch whole: the innocent record batched with the oversized
    one is sent again alone and delivered, only the oversized one's input is dead-lettered."""
    broker = MemoryBroker(topic_limits={OUTPUT: 8_000})
    _publish(broker, _job("job-next"), _job("job-big"))
    producer = MemoryProducer(broker)
    # job-next's output shares the refused batch (its first delivery fails with the same error).
    producer.fail_next(OUTPUT, KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "Broker: Message size too large"))
    await _run(_stage(_settings(max_message_bytes=1_000_000), big={"job-big": 10_000}), broker, producer)
    assert _outputs(broker) == ["job-next"]
    ((headers, _),) = _letters(broker)
    assert headers["original.key"] == "job-big"
