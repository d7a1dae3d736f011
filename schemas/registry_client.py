"""The schema registry as the rest of Lightbox sees it: one configured client, subject names, the
schema files each subject is made of, and what a registry failure means.

Subjects follow Confluent's topic-name strategy, `<broker topic>-value`, so a stock serializer
configured only with the registry URL finds the same subject Lightbox registered; the topic
prefix is part of the broker topic, so every prefix (a test session, a staging run) has subjects
of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from processors.config import RegistrySettings
from schemas.registry import AVRO_DIR
from schemas.topics import SCHEMA_OF, Topic, TopicNames

# Confluent's error codes, which Apicurio's compatible API answers with too.
SUBJECT_NOT_FOUND = 40401
VERSION_NOT_FOUND = 40402
SCHEMA_NOT_FOUND = 40403
CCOMPAT_PATH = "/apis/ccompat/v7"


class RegistryUnavailableError(ConnectionError):
    """The registry could not answer (down, timing out, 5xx), or has no version of a subject a
    writer needs. Not the message's fault: a ConnectionError, so the runtime retries it with
    backoff instead of dead-lettering the message."""


def subject_name(topic: Topic, prefix: str = "") -> str:
    return f"{TopicNames(prefix)(topic)}-value"


@dataclass(frozen=True)
class SchemaFile:
    """One committed version of a schema: schemas/avro/<name>/v<version>.avsc."""

    name: str
    version: int
    text: str

    @property
    def label(self) -> str:
        return f"{self.name}.v{self.version}"

    @property
    def path(self) -> str:
        return f"schemas/avro/{self.name}/v{self.version}.avsc"


@cache
def schema_files(name: str, root: Path = AVRO_DIR) -> tuple[SchemaFile, ...]:
    """Every committed version of one schema, oldest first (the order they must be registered in,
    so registry version N is file vN)."""
    files = sorted((root / name).glob("v*.avsc"), key=lambda p: int(p.stem[1:]))
    if not files:
        raise KeyError(f"no schema files under {root / name}")
    return tuple(SchemaFile(name, int(f.stem[1:]), f.read_text()) for f in files)


def make_client(settings: RegistrySettings) -> SchemaRegistryClient:
    """A client that fails within seconds instead of the library's default 20 s of retries: a
    stage with an unreachable registry should back off in the runtime, where it is visible."""
    return SchemaRegistryClient(
        {
            "url": settings.url,
            "timeout": settings.timeout_s,
            "max.retries": 2,
            "retries.wait.ms": 200,
            "retries.max.wait.ms": 2000,
        }
    )


def is_not_found(exc: SchemaRegistryError, *codes: int) -> bool:
    return exc.http_status_code == 404 and (not codes or exc.error_code in codes)


def describe(exc: BaseException) -> str:
    """The registry's own message where it gave one."""
    if isinstance(exc, SchemaRegistryError):
        return f"{exc.error_message} (HTTP {exc.http_status_code}, code {exc.error_code})"
    return f"{type(exc).__name__}: {exc}"


def native_api_url(ccompat_url: str) -> str | None:
    """Apicurio's own v3 API beside its Confluent-compatible one (it explains a rule violation
    in detail, which the compatible API does not); None for a registry that is not Apicurio."""
    parts = urlsplit(ccompat_url)
    path = parts.path.rstrip("/")
    if not path.endswith(CCOMPAT_PATH):
        return None
    native = path[: -len(CCOMPAT_PATH)] + "/apis/registry/v3"
    return urlunsplit((parts.scheme, parts.netloc, native, "", ""))


def subjects(prefix: str = "", root: Path = AVRO_DIR) -> list[tuple[Topic, str, tuple[SchemaFile, ...]]]:
    """Every topic's subject under the prefix, with the schema files registered under it."""
    return [(topic, subject_name(topic, prefix), schema_files(SCHEMA_OF[topic], root)) for topic in Topic]
