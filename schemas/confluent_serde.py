"""Confluent-framed Avro through the schema registry, with AvroSerde's encode/decode shape.

Wire format (Confluent's, what every stock serializer writes): magic byte 0, the writer schema's
4-byte big-endian registry id, then the Avro binary body. The serialization itself is
confluent-kafka's AvroSerializer and AvroDeserializer; this module adds what Lightbox needs around
them:

* the subject is the topic's (`<prefix><topic>-value`), and a record is written in the newest
  version registered under it, looked up once per process, never registered from here (the
  schema tooling registers, under the subject's compatibility rule);
* a message is read with this code's newest schema as the reader, whatever registered version
  wrote it, older or newer (writer schema fetched by id, Avro resolution);
* the registry is asked only about ids and subjects a process has not seen yet: the client
  caches schemas by id, the serializer its subject's id;
* every way a payload can be unreadable is a SerdeError whose message says why (no Confluent
  frame, single-object encoding, an id the registry does not know, another schema's record, a
  corrupt body), so the runtime dead-letters it with that reason; a registry that cannot answer
  is a RegistryUnavailableError instead (retried, never dead-lettered: the message is fine).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import fastavro
from confluent_kafka.schema_registry import (
    RegisteredSchema,
    Schema,
    SchemaRegistryClient,
)
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

from processors.config import RegistrySettings
from schemas.registry import AVRO_DIR
from schemas.registry_client import (
    SCHEMA_NOT_FOUND,
    SUBJECT_NOT_FOUND,
    VERSION_NOT_FOUND,
    RegistryUnavailableError,
    describe,
    is_not_found,
    make_client,
    schema_files,
    subject_name,
)
from schemas.registry_client import subjects as registry_subjects
from schemas.serde import SerdeError, _describe_validation
from schemas.topics import SCHEMA_OF, Topic, TopicNames

MAGIC = 0
HEADER_LEN = 5
SINGLE_OBJECT_MAGIC = b"\xc3\x01"


def _fullname(schema_text: str) -> str | None:
    """namespace.name of a record schema (what tells one Lightbox schema from another)."""
    try:
        parsed = json.loads(schema_text)
    except ValueError:
        return None
    if not isinstance(parsed, dict) or parsed.get("type") != "record":
        return None
    name = str(parsed.get("name", ""))
    namespace = parsed.get("namespace")
    return name if "." in name or not namespace else f"{namespace}.{name}"


class _Writer:
    """One registered version of the subject, ready to serialize with."""

    def __init__(self, client: SchemaRegistryClient, subject: str, registered: RegisteredSchema) -> None:
        text = registered.schema.schema_str if registered.schema else None
        if not text:
            raise RegistryUnavailableError(f"the registry returned no schema text for {subject}")
        self.id = registered.schema_id
        self.version = registered.version
        self.parsed = fastavro.parse_schema(json.loads(text))
        schema = Schema(text.strip(), "AVRO")
        # auto.register off: writers use what the tooling registered, never a version nobody
        # checked. The serializer looks its schema up under the subject on its first call; doing
        # that lookup here fills the client's cache with the same Schema, so every encode after
        # this constructor is local and only a bad record can make it fail.
        client.lookup_schema(subject, schema)
        self.serializer = AvroSerializer(
            client,
            schema,
            conf={
                "auto.register.schemas": False,
                "validate.strict.allow.default": True,
                # Named, not left to the library's default, which also asks the registry for
                # "associations" (a Confluent Cloud feature) before falling back to this.
                "subject.name.strategy.type": "TOPIC",
            },
        )


class ConfluentSerde:
    """Encodes with the newest registered version of one topic's subject; decodes anything
    written by any registered version of its schema."""

    def __init__(
        self,
        topic: Topic,
        client: SchemaRegistryClient,
        prefix: str = "",
        registry_url: str = "",
        root: Path = AVRO_DIR,
    ) -> None:
        self.topic = topic
        self.schema_name = SCHEMA_OF[topic]
        self.subject = subject_name(topic, prefix)
        self.registry_url = registry_url or "the schema registry"
        self._client = client
        self._ctx = SerializationContext(TopicNames(prefix)(topic), MessageField.VALUE)
        reader = schema_files(self.schema_name, root)[-1]
        self.reader_label = reader.label
        self._reader_name = _fullname(reader.text)
        self._reader_json = json.loads(reader.text)
        # The reader is this code's newest schema: data from older writers gets the defaults of
        # fields added since, data from newer writers loses only fields this code cannot know.
        self._resolving = AvroDeserializer(client, reader.text)
        # Data written in exactly the reader's schema needs no resolution, which costs about a
        # third of a decode; read with the writer schema alone, the record is the same.
        self._as_written = AvroDeserializer(client)
        self._lock = threading.Lock()
        self._writers: dict[int | None, _Writer] = {}  # registry version (None: newest) -> writer
        # schema id -> (why it is not ours, or None; the deserializer for it)
        self._ids: dict[int, tuple[str | None, AvroDeserializer]] = {}

    # -- writing ---------------------------------------------------------------------------

    def writer(self, version: int | None = None) -> _Writer:
        """The subject's newest registered version (or registry version `version`), looked up
        once and kept for the life of this serde."""
        found = self._writers.get(version)
        if found is not None:
            return found
        with self._lock:
            if version not in self._writers:
                registered = self._registered(version)
                try:
                    self._writers[version] = _Writer(self._client, self.subject, registered)
                except SchemaRegistryError as exc:
                    raise self._unavailable(exc) from exc
                except Exception as exc:  # the client's transport errors
                    raise self._unavailable(exc) from exc
            return self._writers[version]

    def encode(self, record: dict[str, Any], version: int | None = None) -> bytes:
        """The record in the subject's newest registered version (or registry version
        `version`, for fixtures and tests), Confluent-framed."""
        writer = self.writer(version)
        try:
            payload = writer.serializer(record, self._ctx)
        except SchemaRegistryError as exc:
            raise self._unavailable(exc) from exc
        except Exception as exc:  # fastavro's range for a record that does not fit
            raise SerdeError(f"record does not fit {self._writer_label(writer)}: {exc}") from exc
        if payload is None:
            raise SerdeError(f"no record to encode for {self.subject}")
        return payload

    def writer_fields(self) -> set[str]:
        """Field names of the version encode() writes (a writer leaves out what it lacks)."""
        return {f["name"] for f in self.writer().parsed["fields"]}

    def validate(self, record: dict[str, Any]) -> None:
        """Raise SerdeError naming the offending field when the record does not fit the version
        encode() would write it in."""
        from fastavro.validation import ValidationError, validate

        try:
            validate(record, self.writer().parsed, raise_errors=True, strict=False)
        except ValidationError as exc:
            raise SerdeError(_describe_validation(exc)) from exc

    # -- reading ---------------------------------------------------------------------------

    def decode(self, payload: bytes | None) -> dict[str, Any]:
        if payload is None:
            raise SerdeError("empty message (tombstone) where a record was expected")
        if len(payload) <= HEADER_LEN or payload[0] != MAGIC:
            raise SerdeError(self._not_framed(payload))
        schema_id = int.from_bytes(payload[1:HEADER_LEN], "big")
        known = self._ids.get(schema_id)
        problem, deserializer = known if known is not None else self._check_id(schema_id)
        if problem is not None:
            raise SerdeError(problem)
        try:
            record = deserializer(payload, None)
        except SchemaRegistryError as exc:
            raise self._unavailable(exc) from exc
        except Exception as exc:  # fastavro raises a wide range on corrupt or unresolvable bodies
            raise SerdeError(
                f"corrupt or unreadable {self.schema_name} body (schema id {schema_id}, read as "
                f"{self.reader_label}): {type(exc).__name__}: {exc}"
            ) from exc
        if not isinstance(record, dict):
            raise SerdeError(f"expected a {self.schema_name} record, got {type(record).__name__}")
        return record

    def _check_id(self, schema_id: int) -> tuple[str | None, AvroDeserializer]:
        """Fetch the writer schema of an id seen for the first time; remember the verdict."""
        try:
            writer = self._client.get_schema(schema_id)
        except SchemaRegistryError as exc:
            # 40403 from a registry; confluent-kafka's in-process one answers a plain 40400.
            if is_not_found(exc, SCHEMA_NOT_FOUND, 40400):
                # Not remembered: an id registered a moment ago may not have reached this
                # registry yet, and the next message with it deserves a fresh look.
                why = f"schema id {schema_id} is not known to the registry ({describe(exc)})"
                return why, self._resolving
            raise self._unavailable(exc) from exc
        except Exception as exc:
            raise self._unavailable(exc) from exc
        text = writer.schema_str or ""
        name = _fullname(text)
        problem = None
        if name != self._reader_name:
            problem = (
                f"expected a {self.schema_name} record ({self._reader_name}), got "
                f"{name or 'a non-record schema'} (schema id {schema_id})"
            )
        same = problem is None and json.loads(text) == self._reader_json
        verdict = (problem, self._as_written if same else self._resolving)
        self._ids[schema_id] = verdict
        return verdict

    @staticmethod
    def _not_framed(payload: bytes) -> str:
        if payload[:2] == SINGLE_OBJECT_MAGIC:
            return (
                "Avro single-object encoding (0xC3 0x01 header), not the Confluent framing "
                "(magic byte 0, 4-byte schema id) this topic carries"
            )
        if len(payload) <= HEADER_LEN:
            return f"not Confluent-framed Avro: {len(payload)} bytes, shorter than the 5-byte header"
        return f"not Confluent-framed Avro: first byte 0x{payload[0]:02x}, the magic byte must be 0x00"

    # -- registry --------------------------------------------------------------------------

    def _registered(self, version: int | None) -> RegisteredSchema:
        try:
            if version is None:
                return self._client.get_latest_version(self.subject)
            return self._client.get_version(self.subject, version)
        except SchemaRegistryError as exc:
            if is_not_found(exc, SUBJECT_NOT_FOUND, VERSION_NOT_FOUND):
                which = "no registered version" if version is None else f"no version {version}"
                raise RegistryUnavailableError(
                    f"subject {self.subject} has {which} in the registry; register the schemas "
                    f"(`lightbox schemas register`, or `lightbox stack up` locally)"
                ) from exc
            raise self._unavailable(exc) from exc
        except Exception as exc:
            raise self._unavailable(exc) from exc

    def _writer_label(self, writer: _Writer) -> str:
        return f"{self.subject} version {writer.version} (schema id {writer.id})"

    def _unavailable(self, exc: BaseException) -> RegistryUnavailableError:
        return RegistryUnavailableError(f"{self.registry_url}: {self.subject}: {describe(exc)}")


class ConfluentSerdes:
    """A process's serdes: one registry client (one id cache) and one serde per topic."""

    def __init__(
        self, settings: RegistrySettings, prefix: str = "", client: SchemaRegistryClient | None = None
    ) -> None:
        self.client = client or make_client(settings)
        self.prefix = prefix
        self.registry_url = settings.url
        self._serdes: dict[Topic, ConfluentSerde] = {}

    def __call__(self, topic: Topic) -> ConfluentSerde:
        serde = self._serdes.get(topic)
        if serde is None:
            serde = self._serdes[topic] = ConfluentSerde(topic, self.client, self.prefix, self.registry_url)
        return serde


MEMORY_SCHEME = "mock://"
_memory_clients: dict[str, SchemaRegistryClient] = {}
_memory_registered: set[str] = set()
_memory_lock = threading.Lock()


def memory_serdes(prefix: str = "", url: str = f"{MEMORY_SCHEME}lightbox") -> ConfluentSerdes:
    """Serdes over an in-process registry (confluent-kafka's mock client, one per URL for the
    whole process) with every committed schema version registered under the prefix's subjects,
    oldest first. The framing is the real one; only the registry is in memory: the analogue of
    the in-memory broker, for tests that run stages without a stack."""
    # One client for every mock URL: ids are handed out in registration order, so two clients
    # (one a test encodes with, one the runner decodes with) would disagree on them.
    with _memory_lock:
        client = _memory_clients.get(MEMORY_SCHEME)
        if client is None:
            client = _memory_clients[MEMORY_SCHEME] = SchemaRegistryClient.new_client({"url": url})
        if prefix not in _memory_registered:
            for _topic, subject, files in registry_subjects(prefix):
                for version in files:
                    client.register_schema(subject, Schema(version.text.strip(), "AVRO"))
            _memory_registered.add(prefix)
    return ConfluentSerdes(RegistrySettings(url=url), prefix, client)


def serdes_for(settings: RegistrySettings, prefix: str = "") -> ConfluentSerdes:
    """The serdes a process uses: the configured registry's, or the in-process one for a
    `mock://` URL (unit tests)."""
    if settings.url.startswith(MEMORY_SCHEME):
        return memory_serdes(prefix, settings.url)
    return ConfluentSerdes(settings, prefix)


__all__ = [
    "ConfluentSerde",
    "ConfluentSerdes",
    "RegistryUnavailableError",
    "SerdeError",
    "memory_serdes",
    "serdes_for",
]
