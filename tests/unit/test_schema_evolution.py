"""Every schema reads data written by every earlier version (fixtures committed in tests/fixtures/avro)."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.registry import default_registry
from schemas.serde import AvroSerde, SerdeError
from tests.fixtures.avro_samples import SAMPLES

FIXTURES = Path(__file__).parents[1] / "fixtures" / "avro"


def test_every_schema_version_has_a_fixture() -> None:
    registry = default_registry()
    for name in registry.names:
        for version in registry.versions(name):
            assert (FIXTURES / f"{name}.v{version.version}.avro").is_file(), (
                f"{version.label} has no fixture: run python -m tests.fixtures.make_avro_fixtures"
            )


@pytest.mark.parametrize(("name", "version"), sorted(SAMPLES))
def test_latest_schema_reads_fixture(name: str, version: int) -> None:
    serde = AvroSerde(name)
    record = serde.decode((FIXTURES / f"{name}.v{version}.avro").read_bytes())
    written = SAMPLES[(name, version)]
    _assert_contains(record, written)


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
    event = AvroSerde("catalog_event").decode((FIXTURES / "catalog_event.v1.avro").read_bytes())
    assert event["request"]["variants"] == 1
    assert event["request"]["template_version"] is None
    assert event["campaign"] is None


def test_a_message_of_another_schema_is_refused_by_name() -> None:
    payload = (FIXTURES / "job.v1.avro").read_bytes()
    with pytest.raises(SerdeError, match=r"expected a catalog_event record, got job\.v1"):
        AvroSerde("catalog_event").decode(payload)


def test_garbage_and_truncation_are_serde_errors() -> None:
    serde = AvroSerde("pipeline_event")
    with pytest.raises(SerdeError, match="single-object"):
        serde.decode(b"{}")
    payload = (FIXTURES / "pipeline_event.v2.avro").read_bytes()
    with pytest.raises(SerdeError, match="corrupt"):
        serde.decode(payload[:-5])
    with pytest.raises(SerdeError, match="tombstone"):
        serde.decode(None)


def test_encoding_rejects_a_record_that_does_not_fit() -> None:
    serde = AvroSerde("review_decision")
    with pytest.raises(SerdeError):
        serde.encode({"job_id": "j", "decision": "MAYBE", "reviewer": "r", "decided_at": 0})


def test_single_object_header_carries_the_writer_fingerprint() -> None:
    serde = AvroSerde("seen_event")
    payload = serde.encode(SAMPLES[("seen_event", 1)])
    assert payload[:2] == b"\xc3\x01"
    assert payload[2:10] == serde.writer.fingerprint
