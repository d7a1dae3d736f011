"""The Confluent serde and the schema tooling without a registry: what it refuses before asking
one, what an unreachable registry means, subjects, the schema files registration relies on.
(tests/integration/test_schema_registry.py runs them against the real registry.)"""

from __future__ import annotations

import json
import socket
import struct

import pytest

from processors.config import RegistrySettings
from schemas.compat import SubjectReport, format_reports
from schemas.confluent_serde import ConfluentSerdes
from schemas.registry import default_registry
from schemas.registry_client import (
    RegistryUnavailableError,
    native_api_url,
    schema_files,
    subject_name,
    subjects,
)
from schemas.serde import AvroSerde, SerdeError
from schemas.topics import SCHEMA_OF, Topic
from tests.fixtures.avro_samples import SAMPLES


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def serdes() -> ConfluentSerdes:
    """Serdes whose registry is a closed port: anything that asks it fails as unreachable, so a
    SerdeError from these proves the payload was judged without a registry call."""
    url = f"http://127.0.0.1:{closed_port()}/apis/ccompat/v7"
    return ConfluentSerdes(RegistrySettings(url=url, timeout_s=0.5), prefix="unit.")


def test_a_tombstone_is_refused(serdes: ConfluentSerdes) -> None:
    with pytest.raises(SerdeError, match="tombstone"):
        serdes(Topic.JOBS_ACCEPTED).decode(None)


def test_single_object_encoding_is_named_as_such(serdes: ConfluentSerdes) -> None:
    payload = AvroSerde("job").encode(SAMPLES[("job", 1)])
    with pytest.raises(SerdeError, match=r"single-object encoding \(0xC3 0x01 header\)"):
        serdes(Topic.JOBS_ACCEPTED).decode(payload)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "shorter than the 5-byte header"),
        (b"\x00\x00\x00\x00\x07", "shorter than the 5-byte header"),  # a header and no body
        (b'{"job_id": "j"}', "first byte 0x7b"),
        (b"\x01" + bytes(16) + b"body", "first byte 0x01"),
    ],
)
def test_payloads_without_the_confluent_frame(serdes: ConfluentSerdes, payload: bytes, reason: str) -> None:
    with pytest.raises(SerdeError, match=reason):
        serdes(Topic.JOBS_ACCEPTED).decode(payload)


def test_an_unreachable_registry_is_not_the_messages_fault(serdes: ConfluentSerdes) -> None:
    framed = b"\x00" + struct.pack(">I", 7) + b"\x02j"
    with pytest.raises(RegistryUnavailableError) as decoding:
        serdes(Topic.JOBS_ACCEPTED).decode(framed)
    with pytest.raises(RegistryUnavailableError) as encoding:
        serdes(Topic.JOBS_ACCEPTED).encode(SAMPLES[("job", 1)])
    for info in (decoding, encoding):
        # Retried by the runtime (a ConnectionError), never dead-lettered (not a ValueError).
        assert isinstance(info.value, ConnectionError)
        assert not isinstance(info.value, ValueError | SerdeError)
        assert "unit.jobs.accepted-value" in str(info.value)


def test_one_serde_per_topic_sharing_one_client(serdes: ConfluentSerdes) -> None:
    a, b = serdes(Topic.JOBS_ACCEPTED), serdes(Topic.JOBS_REFERENCED)
    assert serdes(Topic.JOBS_ACCEPTED) is a
    assert a.subject == "unit.jobs.accepted-value" and b.subject == "unit.jobs.referenced-value"
    assert a._client is b._client  # one id cache for the whole process
    assert a.reader_label == b.reader_label == f"job.v{default_registry().latest('job').version}"


def test_subjects_follow_the_topic_name_strategy() -> None:
    assert subject_name(Topic.PIPELINE_DLQ) == "pipeline.dlq-value"
    assert subject_name(Topic.ASSETS_PUBLISHED, "staging.") == "staging.assets.published-value"
    listed = subjects("p.")
    assert [topic for topic, _, _ in listed] == list(Topic)
    for topic, subject, files in listed:
        assert subject == f"p.{topic.value}-value"
        assert {f.name for f in files} == {SCHEMA_OF[topic]}


@pytest.mark.parametrize("name", default_registry().names)
def test_schema_files_are_numbered_from_one_without_gaps(name: str) -> None:
    # Registration relies on it: file vN is registry version N of each subject.
    files = schema_files(name)
    assert [f.version for f in files] == list(range(1, len(files) + 1))
    for f in files:
        json.loads(f.text)
        assert f.path == f"schemas/avro/{name}/v{f.version}.avsc"


def test_apicurios_native_api_sits_beside_the_compatible_one() -> None:
    assert (
        native_api_url("http://127.0.0.1:18081/apis/ccompat/v7") == "http://127.0.0.1:18081/apis/registry/v3"
    )
    assert native_api_url("http://registry:8080/apis/ccompat/v7/") == "http://registry:8080/apis/registry/v3"
    assert native_api_url("http://confluent:8081") is None


def test_reports_show_problems_under_their_subject() -> None:
    fine = SubjectReport("jobs.accepted-value", "job", [1], [], "BACKWARD")
    pending = SubjectReport("catalog.events-value", "catalog_event", [1], ["catalog_event.v2"], "BACKWARD")
    bad = SubjectReport("pipeline.dlq-value", "dlq_envelope", [1], ["dlq_envelope.v2"], "BACKWARD")
    bad.problems.append("schemas/avro/dlq_envelope/v2.avsc is not BACKWARD-compatible: new_required")
    lines = format_reports([fine, pending, bad]).splitlines()
    assert lines[0].endswith("up to date")
    assert lines[1].endswith("would register catalog_event.v2")
    assert "INCOMPATIBLE" in lines[2]
    assert lines[3].strip().startswith("schemas/avro/dlq_envelope/v2.avsc is not BACKWARD-compatible")
    assert not bad.ok and fine.ok and pending.ok
