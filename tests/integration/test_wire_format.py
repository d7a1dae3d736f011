"""Lightbox's topics speak the Kafka ecosystem's contract: Confluent-framed Avro through the
stack's schema registry. An upstream producer and independent consumers written only with stock
clients (confluent-kafka's serde, ClickHouse's AvroConfluent format through chDB) interoperate with
the running pipeline; frames the registry cannot vouch for are dead-lettered with their reason.

Nothing here imports Lightbox serde code on the stock side: what these tests prove is that a team
that has never seen this repository can talk to its topics."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Message, Producer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from deploy.local.session import PipelineSession, expected_job_ids
from schemas.serde import AvroSerde
from schemas.topics import Topic
from tests.support.catalog import events_for

pytestmark = pytest.mark.integration

AVRO_DIR = Path(__file__).resolve().parents[2] / "schemas" / "avro"
UNKNOWN_ID = 2147483000  # far above any id the registry hands out


def newest_schema_text(name: str) -> str:
    """What an upstream team would copy: the newest published .avsc of the schema."""
    files = sorted(AVRO_DIR.glob(f"{name}/v*.avsc"), key=lambda p: int(p.stem[1:]))
    return files[-1].read_text()


def topic_name(pipeline: PipelineSession, topic: Topic) -> str:
    return pipeline.settings.kafka.topic_prefix + topic.value


def stock_registry(pipeline: PipelineSession) -> SchemaRegistryClient:
    return SchemaRegistryClient({"url": pipeline.settings.registry.url})


def collect(
    pipeline: PipelineSession,
    topic: Topic,
    wanted: Callable[[Message], bool],
    count: int,
    timeout_s: float = 60,
) -> list[Message]:
    """The first `count` messages of the topic that `wanted` picks, read from the beginning."""
    name = topic_name(pipeline, topic)
    consumer = Consumer(
        {
            "bootstrap.servers": pipeline.settings.kafka.bootstrap,
            "group.id": f"wire-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
        }
    )
    found: list[Message] = []
    try:
        partitions = consumer.list_topics(name, timeout=10).topics[name].partitions
        consumer.assign([TopicPartition(name, p, 0) for p in partitions])
        deadline = time.monotonic() + timeout_s
        while len(found) < count and time.monotonic() < deadline:
            found.extend(m for m in consumer.consume(100, 1.0) if not m.error() and wanted(m))
    finally:
        consumer.close()
    assert len(found) >= count, f"{len(found)} of {count} wanted messages on {name} in {timeout_s}s"
    return found[:count]


def headers_of(message: Message) -> dict[str, str]:
    return {k: (v or b"").decode() for k, v in message.headers() or []}


_CLICKHOUSE_READS = """
import sys
import chdb
print(chdb.query(
    f"SELECT * FROM file('{sys.argv[1]}', 'AvroConfluent', '{sys.argv[3]}') "
    f"SETTINGS format_avro_schema_registry_url='{sys.argv[2]}'",
    "JSONEachRow",
))
"""


def clickhouse_reads(frames: list[bytes], structure: str, registry_url: str, tmp_path: Path) -> list[dict]:
    """ClickHouse's own C++ Avro reader (chDB) decodes the frames, fetching the writer schema by id
    from the registry itself. Its own process: chDB allows one engine per process."""
    data = tmp_path / f"frames-{uuid.uuid4().hex[:8]}.bin"
    data.write_bytes(b"".join(frames))
    out = subprocess.run(
        [sys.executable, "-c", _CLICKHOUSE_READS, str(data), registry_url, structure],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


@dataclass(frozen=True)
class Upstream:
    """A catalogue event published by the stock producer, and what became of it."""

    event: dict[str, Any]
    job_id: str
    frame: bytes
    state: str | None


@pytest.fixture(scope="module")
def upstream(pipeline: PipelineSession, catalog_server: Any) -> Upstream:
    (event,) = events_for(catalog_server, [3], "wire")
    (job_id,) = expected_job_ids([event])
    topic = topic_name(pipeline, Topic.CATALOG_EVENTS)

    # Everything an upstream team needs: the registry's URL, the topic, the published .avsc.
    # The subject already holds the schema (Lightbox registers it); write its newest version.
    serializer = AvroSerializer(
        stock_registry(pipeline),
        newest_schema_text("catalog_event"),
        conf={"auto.register.schemas": False, "use.latest.version": True},
    )
    frame = serializer(event, SerializationContext(topic, MessageField.VALUE))
    assert frame is not None
    producer = Producer({"bootstrap.servers": pipeline.settings.kafka.bootstrap})
    producer.produce(topic, key=event["product"]["sku"].encode(), value=frame)
    assert producer.flush(30) == 0

    states = pipeline.wait_for([job_id], timeout_s=120)
    return Upstream(event=event, job_id=job_id, frame=frame, state=states.get(job_id))


@dataclass(frozen=True)
class Rejected:
    """Frames a stock reader could not trust either, sent where the references stage reads."""

    payloads: dict[str, bytes]  # kind -> the bytes sent
    offsets: dict[str, int]  # kind -> its offset on jobs.accepted
    partitions: dict[str, int]


@pytest.fixture(scope="module")
def rejected(pipeline: PipelineSession, upstream: Upstream) -> Rejected:
    topic = topic_name(pipeline, Topic.JOBS_ACCEPTED)
    # A real job's body behind each wrong header: only the header is at fault.
    (accepted,) = collect(pipeline, Topic.JOBS_ACCEPTED, lambda m: m.key() == upstream.job_id.encode(), 1)
    job = AvroDeserializer(stock_registry(pipeline))(
        accepted.value(), SerializationContext(topic, MessageField.VALUE)
    )
    body = accepted.value()[5:]
    payloads = {
        "unknown-id": b"\x00" + UNKNOWN_ID.to_bytes(4, "big") + body,
        # What Lightbox wrote before the registry: Avro single-object encoding (C3 01, fingerprint).
        "single-object": AvroSerde("job").encode(job),
    }
    assert payloads["single-object"][:2] == b"\xc3\x01"
    offsets: dict[str, int] = {}
    partitions: dict[str, int] = {}

    def delivered(kind: str) -> Callable[[Any, Message], None]:
        def note(err: Any, msg: Message) -> None:
            assert err is None, err
            offsets[kind], partitions[kind] = int(msg.offset() or 0), int(msg.partition() or 0)

        return note

    producer = Producer({"bootstrap.servers": pipeline.settings.kafka.bootstrap})
    for kind, payload in payloads.items():
        producer.produce(topic, key=f"wire-{kind}".encode(), value=payload, on_delivery=delivered(kind))
    assert producer.flush(30) == 0
    return Rejected(payloads=payloads, offsets=offsets, partitions=partitions)


def dead_letters_of(pipeline: PipelineSession, rejected: Rejected) -> dict[str, Message]:
    source = topic_name(pipeline, Topic.JOBS_ACCEPTED)
    wanted = {(rejected.partitions[k], rejected.offsets[k]): k for k in rejected.offsets}

    def ours(message: Message) -> bool:
        h = headers_of(message)
        if h.get("dlq.original.topic") != source:
            return False
        return (int(h["dlq.original.partition"]), int(h["dlq.original.offset"])) in wanted

    letters = collect(pipeline, Topic.PIPELINE_DLQ, ours, len(wanted), timeout_s=90)
    by_kind: dict[str, Message] = {}
    for letter in letters:
        h = headers_of(letter)
        by_kind[wanted[(int(h["dlq.original.partition"]), int(h["dlq.original.offset"]))]] = letter
    return by_kind


# --- an upstream producer with stock clients ---------------------------------------------------


def test_an_event_from_the_stock_avro_serializer_becomes_a_published_asset(
    pipeline: PipelineSession, upstream: Upstream
) -> None:
    subject = f"{topic_name(pipeline, Topic.CATALOG_EVENTS)}-value"
    newest = stock_registry(pipeline).get_latest_version(subject)
    # The stock framing: magic byte 0, the registry's id of the subject's newest version.
    assert upstream.frame[0] == 0
    assert int.from_bytes(upstream.frame[1:5], "big") == newest.schema_id
    assert upstream.state == "published"


# --- independent consumers -------------------------------------------------------------------


@pytest.mark.parametrize("topic", [Topic.JOBS_ACCEPTED, Topic.ASSETS_PUBLISHED], ids=str)
def test_the_stock_avro_deserializer_reads_the_job_topics(
    pipeline: PipelineSession, upstream: Upstream, topic: Topic
) -> None:
    assert upstream.state == "published"
    (message,) = collect(pipeline, topic, lambda m: m.key() == upstream.job_id.encode(), 1)
    name = topic_name(pipeline, topic)
    job = AvroDeserializer(stock_registry(pipeline))(
        message.value(), SerializationContext(name, MessageField.VALUE)
    )
    subject = f"{name}-value"
    written_with = int.from_bytes(message.value()[1:5], "big")
    assert written_with == stock_registry(pipeline).get_latest_version(subject).schema_id
    assert job["job_id"] == upstream.job_id
    assert job["event_id"] == upstream.event["event_id"]
    assert job["product"]["sku"] == upstream.event["product"]["sku"]


@pytest.mark.parametrize("topic", [Topic.JOBS_ACCEPTED, Topic.ASSETS_PUBLISHED], ids=str)
def test_clickhouses_avroconfluent_reads_the_job_topics(
    pipeline: PipelineSession, upstream: Upstream, topic: Topic, tmp_path: Path
) -> None:
    assert upstream.state == "published"
    (message,) = collect(pipeline, topic, lambda m: m.key() == upstream.job_id.encode(), 1)
    rows = clickhouse_reads(
        [message.value()], "job_id String, event_id String", pipeline.settings.registry.url, tmp_path
    )
    assert rows == [{"job_id": upstream.job_id, "event_id": upstream.event["event_id"]}]


# --- what is dead-lettered, and how independent readers see it ----------------------------------


def test_unknown_ids_and_single_object_frames_are_dead_lettered_with_their_reason(
    pipeline: PipelineSession, rejected: Rejected
) -> None:
    letters = dead_letters_of(pipeline, rejected)
    stock = AvroDeserializer(stock_registry(pipeline))
    dlq = topic_name(pipeline, Topic.PIPELINE_DLQ)
    reasons = {
        "unknown-id": rf"schema id {UNKNOWN_ID} is not known to the registry",
        "single-object": r"Avro single-object encoding \(0xC3 0x01 header\), not the Confluent framing",
    }
    for kind, reason in reasons.items():
        message = letters[kind]
        letter = stock(message.value(), SerializationContext(dlq, MessageField.VALUE))
        headers = headers_of(message)
        assert letter["stage"] == headers["dlq.stage"] == "references"
        assert letter["error_class"] == headers["dlq.error.class"] == "SerdeError"
        assert re.search(reason, letter["error_message"]), letter["error_message"]
        assert re.search(reason, headers["dlq.error.message"]), headers["dlq.error.message"]
        assert letter["original_key"] == f"wire-{kind}".encode()
        assert letter["original_offset"] == rejected.offsets[kind]
        assert letter["original_value"] == rejected.payloads[kind]
        assert letter["attempts"] == 1  # bytes that do not decode are not retried


def test_clickhouses_avroconfluent_reads_the_dead_letters(
    pipeline: PipelineSession, rejected: Rejected, tmp_path: Path
) -> None:
    letters = dead_letters_of(pipeline, rejected)
    kinds = sorted(letters)
    rows = clickhouse_reads(
        [letters[k].value() for k in kinds],
        "original_topic String, original_offset Int64, stage String, error_class String, "
        "error_message String",
        pipeline.settings.registry.url,
        tmp_path,
    )
    assert [r["original_offset"] for r in rows] == [rejected.offsets[k] for k in kinds]
    assert {(r["original_topic"], r["stage"], r["error_class"]) for r in rows} == {
        (topic_name(pipeline, Topic.JOBS_ACCEPTED), "references", "SerdeError")
    }
    messages = dict(zip(kinds, (r["error_message"] for r in rows), strict=True))
    assert "not known to the registry" in messages["unknown-id"]
    assert "single-object" in messages["single-object"]


# --- kcat ------------------------------------------------------------------------------------


def test_debians_kcat_still_lacks_avro_support() -> None:
    # scripts/bootstrap.sh installs kcat: a missing one is a setup failure, not a skip.
    assert shutil.which("kcat"), "kcat is not installed: run scripts/bootstrap.sh"
    # kcat would be the obvious independent consumer (`-s value=avro -r URL`), but Debian builds
    # it without libserdes. The day this fails, the packaged kcat can decode our topics: add it
    # as a third independent reader beside the stock deserializer and ClickHouse.
    version = subprocess.run(["kcat", "-V"], capture_output=True, text=True, timeout=30)
    features = re.search(r"^Version \S+ \(([^)]*)", version.stdout, re.MULTILINE)
    assert features is not None, version.stdout
    assert "Avro" not in features.group(1).split(", "), version.stdout
    refused = subprocess.run(
        ["kcat", "-b", "127.0.0.1:1", "-C", "-t", "x", "-e", "-s", "value=avro", "-r", "http://127.0.0.1:1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "lacks Avro/Schema-Registry support" in refused.stderr + refused.stdout
