"""The Confluent serde and the schema tooling against the real registry (the stack's Apicurio,
stored in the stack's Kafka). Every test works under subjects of its own topic prefix, deleted
afterwards."""

from __future__ import annotations

import json
import shutil
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from deploy.local.stack import LocalStack
from processors.config import Settings
from schemas.compat import CompatibilityError, check, register, unregister
from schemas.confluent_serde import ConfluentSerde, ConfluentSerdes
from schemas.registry import AVRO_DIR
from schemas.registry_client import make_client, schema_files, subject_name
from schemas.serde import AvroSerde, SerdeError
from schemas.topics import SCHEMA_OF, Topic, TopicNames
from tests.fixtures.avro_samples import SAMPLES

pytestmark = pytest.mark.integration

JOB_TOPICS = [t for t in Topic if SCHEMA_OF[t] == "job"]


def with_prefix(settings: Settings, prefix: str, **registry: Any) -> Settings:
    return settings.model_copy(
        update={
            "kafka": settings.kafka.model_copy(update={"topic_prefix": prefix}),
            "registry": settings.registry.model_copy(update=registry),
        }
    )


@pytest.fixture
def fresh(stack_settings: Settings) -> Iterator[Settings]:
    """Settings under a prefix whose subjects do not exist yet; deleted afterwards."""
    settings = with_prefix(stack_settings, f"reg-{uuid.uuid4().hex[:8]}.")
    yield settings
    unregister(settings)


@pytest.fixture
def registered(fresh: Settings) -> Settings:
    """A prefix with every committed schema registered, as `stack up` leaves it."""
    register(fresh)
    return fresh


def latest_sample(name: str) -> dict[str, Any]:
    return SAMPLES[(name, max(v for n, v in SAMPLES if n == name))]


def schema_tree(tmp_path: Path, **files: dict[str, Any] | None) -> Path:
    """A copy of schemas/avro with files added, replaced (a dict) or removed (None), named like
    job__v2 for schemas/avro/job/v2.avsc."""
    root = tmp_path / "avro"
    shutil.copytree(AVRO_DIR, root)
    for key, content in files.items():
        name, version = key.split("__")
        path = root / name / f"{version}.avsc"
        if content is None:
            path.unlink()
        else:
            path.write_text(json.dumps(content, indent=2))
    return root


def next_job(field: dict[str, Any]) -> tuple[str, int, dict[str, Any]]:
    """The job schema's next version (its newest plus one field): schema_tree's key for it, its
    number, the schema."""
    files = schema_files("job")
    schema = json.loads(files[-1].text)
    schema["fields"] = [*schema["fields"], field]
    version = files[-1].version + 1
    return f"job__v{version}", version, schema


def job_sample() -> dict[str, Any]:
    return latest_sample("job")


REQUIRED = {"name": "cost_cents", "type": "long"}  # no default: old data cannot be read with it
OPTIONAL = {"name": "cost_cents", "type": ["null", "long"], "default": None}


def contains(record: Any, written: Any) -> bool:
    """Every written value reads back (logical types read back as datetimes)."""
    if isinstance(written, dict) and isinstance(record, dict):
        return all(k in record and contains(record[k], v) for k, v in written.items())
    if isinstance(written, list) and isinstance(record, list):
        return len(written) == len(record) and all(map(contains, record, written))
    if hasattr(record, "timestamp") and isinstance(written, int):
        return int(record.timestamp() * 1000) == written
    return bool(record == written)


# --- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("topic", list(Topic), ids=str)
def test_every_topic_round_trips_in_its_newest_registered_version(registered: Settings, topic: Topic) -> None:
    serde = ConfluentSerdes(registered.registry, registered.kafka.topic_prefix)(topic)
    record = latest_sample(SCHEMA_OF[topic])
    payload = serde.encode(record)
    newest = make_client(registered.registry).get_latest_version(serde.subject)
    assert payload[0] == 0 and int.from_bytes(payload[1:5], "big") == newest.schema_id
    assert contains(serde.decode(payload), record)


def test_v1_data_reads_with_the_v2_reader_and_v2_data_with_the_v1_reader(
    registered: Settings, tmp_path: Path
) -> None:
    prefix = registered.kafka.topic_prefix
    client = make_client(registered.registry)
    current = ConfluentSerde(Topic.CATALOG_EVENTS, client, prefix)  # reader: the newest, v2 or later
    later = {f"catalog_event__v{f.version}": None for f in schema_files("catalog_event")[1:]}
    old_code = ConfluentSerde(Topic.CATALOG_EVENTS, client, prefix, root=schema_tree(tmp_path, **later))
    assert old_code.reader_label == "catalog_event.v1" and current.reader_label != "catalog_event.v1"

    from_v1 = current.decode(current.encode(SAMPLES[("catalog_event", 1)], version=1))
    assert contains(from_v1, SAMPLES[("catalog_event", 1)])
    assert from_v1["request"]["variants"] == 1 and from_v1["campaign"] is None  # v2's defaults

    v2_record = SAMPLES[("catalog_event", 2)]
    from_v2 = old_code.decode(current.encode(v2_record))  # a newer writer than the reader
    assert "campaign" not in from_v2 and "variants" not in from_v2["request"]
    assert from_v2["event_id"] == v2_record["event_id"]
    assert from_v2["product"]["sku"] == v2_record["product"]["sku"]


# --- compatibility -------------------------------------------------------------------------


def test_an_incompatible_change_is_refused_with_the_registrys_message(
    registered: Settings, tmp_path: Path
) -> None:
    key, version, schema = next_job(REQUIRED)
    root = schema_tree(tmp_path, **{key: schema})
    client = make_client(registered.registry)
    before = {t: client.get_versions(subject_name(t, registered.kafka.topic_prefix)) for t in Topic}

    reports = {r.subject: r for r in check(registered, root)}
    for topic in JOB_TOPICS:
        report = reports[subject_name(topic, registered.kafka.topic_prefix)]
        assert report.pending == [f"job.v{version}"] and not report.ok
        assert f"schemas/avro/job/v{version}.avsc is not BACKWARD-compatible" in report.problems[0]
        assert "cost_cents" in report.problems[0]  # Apicurio's detail names the field
    assert all(r.ok for r in reports.values() if r.schema != "job")

    with pytest.raises(CompatibilityError, match="cost_cents"):
        register(registered, root=root)
    after = {t: client.get_versions(subject_name(t, registered.kafka.topic_prefix)) for t in Topic}
    assert after == before  # nothing registered, not even the subjects that were fine


def test_on_new_subjects_the_registry_refuses_the_incompatible_successor(
    fresh: Settings, tmp_path: Path
) -> None:
    # A subject with no version yet cannot be checked in advance: its v1 is registered, and the
    # registry refuses the v2 that breaks the rule; the error says what was registered.
    key, version, schema = next_job(REQUIRED)
    root = schema_tree(tmp_path, **{key: schema})
    assert all(r.ok for r in check(fresh, root))
    with pytest.raises(CompatibilityError, match="registered before the refusal") as info:
        register(fresh, root=root)
    assert f"job/v{version}.avsc refused by the registry" in str(info.value)
    first_job = subject_name(JOB_TOPICS[0], fresh.kafka.topic_prefix)
    assert make_client(fresh.registry).get_versions(first_job) == list(range(1, version))


def test_the_registry_itself_refuses_an_incompatible_version(registered: Settings) -> None:
    # Past the tooling's check (another writer, a race), the subject's rule still holds.
    from confluent_kafka.schema_registry import Schema
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    client = make_client(registered.registry)
    subject = subject_name(Topic.JOBS_ACCEPTED, registered.kafka.topic_prefix)
    bad = Schema(json.dumps(next_job(REQUIRED)[2]), "AVRO")
    with pytest.raises(SchemaRegistryError) as info:
        client.register_schema(subject, bad)
    assert info.value.http_status_code == 409
    assert client.get_compatibility(subject) == "BACKWARD"


def test_a_compatible_change_is_accepted_and_old_data_still_decodes(
    registered: Settings, tmp_path: Path
) -> None:
    prefix = registered.kafka.topic_prefix
    client = make_client(registered.registry)
    old_code = ConfluentSerde(Topic.JOBS_ACCEPTED, client, prefix)  # reader and writer: today's newest
    old_payload = old_code.encode(job_sample())

    key, version, schema = next_job(OPTIONAL)
    root = schema_tree(tmp_path, **{key: schema})
    reports = register(registered, root=root)
    assert all(r.ok for r in reports)
    assert {r.subject for r in reports if r.registered_now == [f"job.v{version}"]} == {
        subject_name(t, prefix) for t in JOB_TOPICS
    }
    assert all(r.ok and not r.pending for r in check(registered, root))

    new_code = ConfluentSerde(Topic.JOBS_ACCEPTED, make_client(registered.registry), prefix, root=root)
    old_read_by_new = new_code.decode(old_payload)
    assert contains(old_read_by_new, job_sample()) and old_read_by_new["cost_cents"] is None

    new_payload = new_code.encode({**job_sample(), "cost_cents": 1250})
    assert new_code.writer().version == version
    assert new_code.decode(new_payload)["cost_cents"] == 1250
    # The old reader still decodes what the new writer wrote (a rolling upgrade, writer first).
    old_read = old_code.decode(new_payload)
    assert contains(old_read, job_sample()) and "cost_cents" not in old_read
    # Old code started now writes the newest registered version: its record with the default.
    restarted_old = ConfluentSerde(Topic.JOBS_ACCEPTED, make_client(registered.registry), prefix)
    assert restarted_old.writer().version == version
    assert new_code.decode(restarted_old.encode(job_sample()))["cost_cents"] is None


def test_a_registered_file_edited_in_place_is_reported(registered: Settings, tmp_path: Path) -> None:
    edited = json.loads(schema_files("job")[0].text)
    edited["fields"].append(OPTIONAL)
    reports = {r.subject: r for r in check(registered, schema_tree(tmp_path, job__v1=edited))}
    report = reports[subject_name(Topic.JOBS_ACCEPTED, registered.kafka.topic_prefix)]
    assert not report.ok
    assert "schemas/avro/job/v1.avsc is not what the registry holds as version 1" in report.problems[0]
    assert f"put the change in v{len(schema_files('job')) + 1}.avsc" in report.problems[0]


def test_check_of_a_registered_prefix_is_clean_and_the_rule_is_the_settings(
    registered: Settings, stack_settings: Settings
) -> None:
    reports = check(registered)
    assert len(reports) == len(Topic)
    assert all(r.ok and not r.pending and r.rule == "BACKWARD" for r in reports)
    assert [r.registered for r in reports] == [
        list(range(1, len(schema_files(SCHEMA_OF[t])) + 1)) for t in Topic
    ]
    other = with_prefix(stack_settings, f"reg-{uuid.uuid4().hex[:8]}.", compatibility="FULL_TRANSITIVE")
    try:
        register(other)
        assert {r.rule for r in check(other)} == {"FULL_TRANSITIVE"}
    finally:
        unregister(other)


# --- what the reader refuses ---------------------------------------------------------------


def test_an_id_the_registry_does_not_know_is_a_serde_error(registered: Settings) -> None:
    serde = ConfluentSerdes(registered.registry, registered.kafka.topic_prefix)(Topic.JOBS_ACCEPTED)
    body = serde.encode(SAMPLES[("job", 1)])[5:]
    with pytest.raises(SerdeError, match=r"schema id 2147483000 is not known to the registry"):
        serde.decode(b"\x00" + (2147483000).to_bytes(4, "big") + body)


def test_another_subjects_record_and_single_object_encoding_are_refused(registered: Settings) -> None:
    serdes = ConfluentSerdes(registered.registry, registered.kafka.topic_prefix)
    decision = serdes(Topic.REVIEW_DECISIONS).encode(SAMPLES[("review_decision", 1)])
    with pytest.raises(SerdeError, match=r"expected a job record .* got lightbox\.review\.ReviewDecision"):
        serdes(Topic.JOBS_ACCEPTED).decode(decision)
    with pytest.raises(SerdeError, match="single-object"):
        serdes(Topic.JOBS_ACCEPTED).decode(AvroSerde("job").encode(SAMPLES[("job", 1)]))


# --- interoperability with stock clients -----------------------------------------------------


def test_a_message_from_the_stock_avro_serializer_decodes(
    registered: Settings, stack_settings: Settings
) -> None:
    prefix = registered.kafka.topic_prefix
    LocalStack(registered, progress=lambda _: None).ensure_topics()
    topic = TopicNames(prefix)(Topic.CATALOG_EVENTS)
    client = make_client(registered.registry)
    before = client.get_versions(subject_name(Topic.CATALOG_EVENTS, prefix))

    # What an upstream team writes: confluent-kafka's own serializer, default configuration.
    upstream = SchemaRegistryClient({"url": registered.registry.url})
    serializer = AvroSerializer(upstream, schema_files("catalog_event")[-1].text)
    producer = Producer({"bootstrap.servers": stack_settings.kafka.bootstrap})
    event = SAMPLES[("catalog_event", 2)]
    value = serializer(event, SerializationContext(topic, MessageField.VALUE))
    producer.produce(topic, key=b"evt", value=value)
    assert producer.flush(30) == 0

    consumer = Consumer(
        {"bootstrap.servers": stack_settings.kafka.bootstrap, "group.id": f"t-{uuid.uuid4()}"}
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        message = None
        for _ in range(30):
            message = consumer.poll(1.0)
            if message is not None and not message.error():
                break
        assert message is not None and not message.error()
    finally:
        consumer.close()
    decoded = ConfluentSerdes(registered.registry, prefix)(Topic.CATALOG_EVENTS).decode(message.value())
    assert contains(decoded, event)
    # Registering the identical schema again made no new version.
    assert client.get_versions(subject_name(Topic.CATALOG_EVENTS, prefix)) == before


def test_the_stock_avro_deserializer_reads_what_lightbox_writes(registered: Settings) -> None:
    serde = ConfluentSerdes(registered.registry, registered.kafka.topic_prefix)(Topic.PIPELINE_EVENTS)
    record = latest_sample("pipeline_event")
    stock = AvroDeserializer(SchemaRegistryClient({"url": registered.registry.url}))
    assert contains(stock(serde.encode(record), None), record)


# --- no registry call per message ------------------------------------------------------------


class CountingProxy:
    """An HTTP proxy in front of the registry that counts the requests it forwards and can be
    shut, so a test can prove which calls a serde makes."""

    def __init__(self, target: str) -> None:
        self.target = target.rstrip("/")
        self.requests: list[str] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self) -> None:
                proxy.requests.append(f"{self.command} {self.path}")
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                upstream = urllib.request.Request(
                    proxy.target + self.path,
                    data=body,
                    method=self.command,
                    headers={
                        k: v for k, v in self.headers.items() if k.lower() in ("content-type", "accept")
                    },
                )
                opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
                try:
                    with opener.open(upstream, timeout=10) as response:
                        status, data = response.status, response.read()
                        kind = response.headers["Content-Type"]
                except urllib.error.HTTPError as exc:
                    status, data, kind = exc.code, exc.read(), exc.headers["Content-Type"]
                self.send_response(status)
                self.send_header("Content-Type", kind or "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _forward

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_schema_ids_are_cached_not_fetched_per_message(registered: Settings) -> None:
    root = registered.registry.url.split("/apis/")[0]
    proxy = CountingProxy(root)
    try:
        proxied = registered.registry.model_copy(update={"url": proxy.url + "/apis/ccompat/v7"})
        serdes = ConfluentSerdes(proxied, registered.kafka.topic_prefix)
        topics = [Topic.CATALOG_EVENTS, Topic.JOBS_ACCEPTED, Topic.PIPELINE_EVENTS, Topic.INTAKE_SEEN]
        old_catalog = serdes(Topic.CATALOG_EVENTS).encode(SAMPLES[("catalog_event", 1)], version=1)
        for topic in topics:  # warm-up: the newest version of each subject, and its id
            serdes(topic).decode(serdes(topic).encode(latest_sample(SCHEMA_OF[topic])))
        serdes(Topic.CATALOG_EVENTS).decode(old_catalog)
        warm = len(proxy.requests)
        # Per subject: its newest version, the serializer's id lookup, the writer schema by id;
        # and for the v1 writer its version, its lookup, and id of v1 when reading it.
        assert 0 < warm <= 3 * len(topics) + 3, proxy.requests
    finally:
        proxy.close()  # from here on, any registry call would fail
    for _ in range(200):
        for topic in topics:
            record = latest_sample(SCHEMA_OF[topic])
            assert contains(serdes(topic).decode(serdes(topic).encode(record)), record)
        serdes(Topic.CATALOG_EVENTS).decode(old_catalog)
    assert len(proxy.requests) == warm


_CLICKHOUSE_READS = """
import sys
import chdb
print(chdb.query(
    f"SELECT original_topic, stage, error_class, attempts FROM file('{sys.argv[1]}', 'AvroConfluent') "
    f"SETTINGS format_avro_schema_registry_url='{sys.argv[2]}'",
    "JSONEachRow",
))
"""


def test_clickhouses_avroconfluent_format_reads_what_lightbox_writes(
    registered: Settings, tmp_path: Path
) -> None:
    # An independent reader (ClickHouse's C++ Avro, through chDB) that resolves the id with the
    # registry itself. In its own process: chDB allows one engine per process.
    import subprocess
    import sys

    serde = ConfluentSerdes(registered.registry, registered.kafka.topic_prefix)(Topic.PIPELINE_DLQ)
    letter = SAMPLES[("dlq_envelope", 1)]
    data = tmp_path / "dlq.bin"
    data.write_bytes(b"".join(serde.encode({**letter, "attempts": n}) for n in (1, 2, 3)))
    out = subprocess.run(
        [sys.executable, "-c", _CLICKHOUSE_READS, str(data), registered.registry.url],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    assert [r["attempts"] for r in rows] == [1, 2, 3]
    assert {(r["original_topic"], r["stage"], r["error_class"]) for r in rows} == {
        (letter["original_topic"], letter["stage"], letter["error_class"])
    }
