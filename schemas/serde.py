"""Avro single-object encoding on fastavro.

Wire format (Avro spec, "Single-object encoding"): 0xC3 0x01, the writer schema's 8-byte
little-endian CRC-64-AVRO fingerprint, then the Avro binary body. Chosen over Schema Registry
framing because it needs no registry service to run: every process ships every schema version,
and the fingerprint names the exact writer schema. docs/decisions.md has the trade-off.
"""

from __future__ import annotations

import io
from typing import Any

import fastavro

from schemas.registry import SchemaRegistry, SchemaVersion, default_registry

MAGIC = b"\xc3\x01"
HEADER_LEN = len(MAGIC) + 8


class SerdeError(ValueError):
    """A payload that cannot be encoded or decoded: never retried, it goes to the dead-letter topic."""


class AvroSerde:
    """Encodes with the latest version of one schema; decodes anything written by any version of it."""

    def __init__(self, schema_name: str, registry: SchemaRegistry | None = None) -> None:
        self.registry = registry or default_registry()
        self.schema_name = schema_name
        self.writer: SchemaVersion = self.registry.latest(schema_name)
        self._known = {v.fingerprint for v in self.registry.versions(schema_name)}

    def encode(self, record: dict[str, Any], version: SchemaVersion | None = None) -> bytes:
        schema = version or self.writer
        buf = io.BytesIO()
        buf.write(MAGIC)
        buf.write(schema.fingerprint)
        try:
            fastavro.schemaless_writer(buf, schema.parsed, record, strict_allow_default=True)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise SerdeError(f"record does not fit {schema.label}: {exc}") from exc
        return buf.getvalue()

    def decode(self, payload: bytes | None) -> dict[str, Any]:
        if payload is None:
            raise SerdeError("empty message (tombstone) where a record was expected")
        if len(payload) < HEADER_LEN or payload[:2] != MAGIC:
            raise SerdeError("not Avro single-object encoded (missing 0xC3 0x01 header)")
        fp = payload[2:HEADER_LEN]
        if fp not in self._known:
            other = self.registry.by_fingerprint(fp)
            what = f"{other.label}" if other else f"unknown fingerprint {fp.hex()}"
            raise SerdeError(f"expected a {self.schema_name} record, got {what}")
        writer = self.registry.by_fingerprint(fp)
        assert writer is not None
        try:
            return fastavro.schemaless_reader(
                io.BytesIO(payload[HEADER_LEN:]), writer.parsed, self.writer.parsed
            )
        except Exception as exc:  # fastavro raises a wide range on corrupt bodies
            raise SerdeError(f"corrupt {writer.label} body: {exc}") from exc

    def validate(self, record: dict[str, Any]) -> None:
        """Raise SerdeError naming the offending field when the record does not fit the schema."""
        from fastavro.validation import ValidationError, validate

        try:
            validate(record, self.writer.parsed, raise_errors=True, strict=False)
        except ValidationError as exc:
            raise SerdeError(_describe_validation(exc)) from exc


def _describe_validation(exc: Exception) -> str:
    errors = getattr(exc, "errors", None) or [str(exc)]
    parts = []
    for err in errors[:3]:
        field = getattr(err, "field", None)
        datum = getattr(err, "datum", None)
        parts.append(f"field {field!r} has invalid value {datum!r:.80}" if field else str(err))
    return "; ".join(parts)
