"""Every schema reads data written by every earlier version (fixture bodies committed in
tests/fixtures/avro, Confluent-framed at run time with the ids of the in-process registry, where
every committed version is registered oldest first, as `lightbox stack up` registers them)."""

from __future__ import annotations

import pytest

from schemas.confluent_serde import ConfluentSerde, memory_serdes
from schemas.registry import default_registry
from schemas.serde import SerdeError
from schemas.topics import SCHEMA_OF, Topic
from tests.fixtures.avro_samples import SAMPLES
from tests.fixtures.framing import FIXTURES, body, framed

SERDES = memory_serdes("evolution.")
TOPIC_OF = {name: next(t for t in Topic if SCHEMA_OF[t] == name) for name in set(SCHEMA_OF.values())}


def serde(name: str) -> ConfluentSerde:
    return SERDES(TOPIC_OF[name])


def test_every_schema_version_has_a_fixture() -> None:
    registry = default_registry()
    for name in registry.names:
        for version in registry.versions(name):
            assert (FIXTURES / f"{name}.v{version.version}.avro").is_file(), (
                f"{version.label} has no fixture: run python -m tests.fixtures.make_avro_fixtures"
            )


@pytest.mark.parametrize(("name", "version"), sorted(SAMPLES))
def test_latest_schema_reads_fixture(name: str, version: int) -> None:
    reader = serde(name)
    record = reader.decode(framed(reader, version))
    _assert_contains(record, SAMPLES[(name, version)])


def _assert_contains(record: object, written: object, path: str = "") -> None:
    """Every written value reads back unchanged; fields the reader added may hold defaults."""
    if isinstance(written, dict) and isinstance(record, dict) and not _is_map(written):
        for field, value in written.items():
            _assert_contains(record[field], value, f"{path}.{field}")
        return
    if hasattr(record, "timestamp"):
        record = int(record.timestamp() * 1000)
    assert record == written, path


def _is_map(value: dict) -> bool:
    return value is not None and all(isinstance(v, str) for v in value.values()) and "sku" not in value


def test_fields_added_in_v2_take_their_defaults_for_v1_data() -> None:
    reader = serde("catalog_event")
    event = reader.decode(framed(reader, 1))
    assert event["request"]["variants"] == 1
    assert event["request"]["template_version"] is None
    assert event["campaign"] is None


def test_a_v1_dead_letter_reads_with_no_original_ref() -> None:
    reader = serde("dlq_envelope")
    assert reader.writer_fields() >= {"original_ref"}, "v2 is the newest registered version"
    letter = reader.decode(framed(reader, 1))
    assert letter["original_ref"] is None and letter["original_value"] == b"\x00bad"


def test_a_message_of_another_schema_is_refused_by_name() -> None:
    payload = framed(serde("job"), 1)
    with pytest.raises(SerdeError, match=r"expected a catalog_event record \(lightbox\.\w+\.\w+\), got "):
        serde("catalog_event").decode(payload)


def test_garbage_truncation_and_other_framings_are_serde_errors() -> None:
    reader = serde("pipeline_event")
    with pytest.raises(SerdeError, match="not Confluent-framed"):
        reader.decode(b"{}xxxxxx")
    with pytest.raises(SerdeError, match="single-object"):
        reader.decode(b"\xc3\x01" + b"\x00" * 8 + body("pipeline_event", 2))
    with pytest.raises(SerdeError, match="corrupt"):
        reader.decode(framed(reader, 2)[:-5])
    with pytest.raises(SerdeError, match="tombstone"):
        reader.decode(None)
    with pytest.raises(SerdeError, match="not known to the registry"):
        reader.decode(b"\x00" + (987_654).to_bytes(4, "big") + body("pipeline_event", 2))


def test_encoding_rejects_a_record_that_does_not_fit() -> None:
    with pytest.raises(SerdeError):
        serde("review_decision").encode(
            {"job_id": "j", "decision": "MAYBE", "reviewer": "r", "decided_at": 0}
        )


def test_the_header_names_the_newest_registered_version() -> None:
    writer = serde("seen_event")
    payload = writer.encode(SAMPLES[("seen_event", 1)])
    assert payload[0] == 0
    assert int.from_bytes(payload[1:5], "big") == writer.writer().id == writer.writer(3).id
    assert payload[5:] != body("seen_event", 1), "written in v3, not v1"
