"""The local stack: real Kafka, MinIO and a schema registry (Apicurio, stored in that Kafka) as
local processes on loopback, for machines without Docker. Installs once into the cache, starts
detached (the services outlive the CLI), is found again by the next call, and creates the
pipeline's topics, bucket and schema subjects.

    stack = LocalStack(load_settings())
    stack.up()      # install if needed, start or reuse, wait for health, topics + bucket + schemas
    stack.ensure_topics("test-1234."); stack.ensure_schemas("test-1234.")   # another prefix
    stack.status()
    stack.down()    # stop, keep data;  stack.reset() also deletes the data
"""

from __future__ import annotations

import contextlib
import fcntl
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourceType,
)
from minio.error import MinioException
from urllib3.exceptions import HTTPError

from deploy.local.kafka import KafkaService, admin_client
from deploy.local.minio import MinioService
from deploy.local.registry import RegistryService
from deploy.local.service import ManagedService, ServiceStatus, StackError
from processors.config import Settings
from processors.storage import ObjectStore
from schemas.compat import CompatibilityError, register
from schemas.registry_client import RegistryUnavailableError
from schemas.topics import COMPACTED, Topic, TopicNames

__all__ = ["LocalStack", "SchemaRefusedError", "ServiceStatus", "StackError"]

DAY_MS = 24 * 3600 * 1000


def topic_configs(topic: Topic) -> dict[str, str]:
    """Per-topic settings beyond the broker defaults (7 days, delete)."""
    if topic in COMPACTED:
        return {"cleanup.policy": "compact"}
    if topic is Topic.PIPELINE_DLQ:
        # A dead letter waits for an SRE however long that takes.
        return {"retention.ms": "-1", "retention.bytes": "-1"}
    if topic is Topic.PIPELINE_EVENTS:
        # The replay source for the ClickHouse sink: keep a month.
        return {"retention.ms": str(30 * DAY_MS), "retention.bytes": "-1"}
    return {}


class SchemaRefusedError(StackError):
    """The registry is up but refused (or the check refused) a committed schema version."""


class LocalStack:
    def __init__(self, settings: Settings, progress: Callable[[str], None] = print) -> None:
        self.settings = settings
        self.progress = progress
        self.kafka = KafkaService(settings, progress)
        self.minio = MinioService(settings, progress)
        self.registry = RegistryService(settings, progress)

    @property
    def services(self) -> list[ManagedService]:
        """In start order: the registry keeps its state in Kafka, so it comes after it."""
        return [self.kafka, self.minio, self.registry]

    def install(self) -> None:
        """Resolve Kafka's jars and the registry, build MinIO, unless cached. Idempotent."""
        with self._lock():
            for service in self.services:
                if service.installed():
                    self.progress(f"{service.name}: cached in {service.home}")
                else:
                    service.install()

    def up(self, timeout_s: float = 120) -> list[ServiceStatus]:
        """Start whatever is not running (installing first if needed), wait until all answer,
        then create the topics, the bucket and the schema subjects under the settings' topic
        prefix. timeout_s bounds each service's wait for health, not the one-time install."""
        with self._lock():
            self.progress(
                f"local stack under {self.settings.home} (logs: {self.settings.log_dir}, "
                f"data: {self.settings.data_dir}, cache: {self.settings.cache_dir})"
            )
            for service in self.services:
                service.preflight()
            if not self.registry.running_already() and not self.registry.installed():
                self.registry.install()  # minutes on a first run: not while the others wait
            # Kafka and MinIO start before either is awaited, so their startups overlap, and all
            # are watched together, so one dying is reported while another is still starting.
            # The registry starts as soon as Kafka answers: it replays its journal from there.
            pending = [(s, s.start(), time.monotonic() + timeout_s) for s in (self.kafka, self.minio)]
            waiting_for_kafka = True
            while pending or waiting_for_kafka:
                pending = [(s, since, d) for s, since, d in pending if not s.check_ready(d, since)]
                if waiting_for_kafka and all(s is not self.kafka for s, _, _ in pending):
                    waiting_for_kafka = False
                    pending.append((self.registry, self.registry.start(), time.monotonic() + timeout_s))
                    continue
                if pending:
                    time.sleep(0.5)
            self.ensure_topics()
            self.ensure_bucket()
            try:
                self.ensure_schemas()
            except SchemaRefusedError as exc:
                # The stack itself is up, and the whole team's tests run under prefixes of their
                # own: one schema file edited in a working tree must not take `up` down for
                # everyone. Said loudly; the writers of that subject fail until it is fixed.
                self.progress(f"WARNING: {exc}")
            return [service.status() for service in self.services]

    def down(self) -> None:
        """Stop the services (SIGTERM, SIGKILL after a grace period), the registry first; data is
        kept."""
        with self._lock():
            self._down()

    def status(self) -> list[ServiceStatus]:
        return [service.status() for service in self.services]

    def reset(self) -> None:
        """Stop all and delete their data (topics, offsets, objects, and with Kafka's data the
        registry's journal: every schema and id). The cache stays."""
        with self._lock():
            self._down()
            for service in self.services:
                if service.data_dir.exists():
                    self.progress(f"{service.name}: deleting {service.data_dir}")
                    shutil.rmtree(service.data_dir)

    def ensure_topics(self, prefix: str | None = None) -> None:
        """Create every pipeline topic under the prefix (default: the settings') that does not
        exist yet; existing ones are left as they are (a partition count is never changed behind
        a running consumer group's back)."""
        kafka = self.settings.kafka
        names = TopicNames(kafka.topic_prefix if prefix is None else prefix)
        admin = admin_client(kafka.bootstrap)
        existing = self._topic_metadata(admin)
        wanted = [
            NewTopic(
                names(topic),
                num_partitions=kafka.partitions,
                replication_factor=kafka.replication_factor,
                config=topic_configs(topic),
            )
            for topic in Topic
            if names(topic) not in existing
        ]
        if wanted:
            futures = admin.create_topics(wanted, request_timeout=30)
            for name, future in futures.items():
                self._created(name, future)
            self.progress(f"kafka: created topics {', '.join(t.topic for t in wanted)}")
        self._align_configs(admin, [t for t in Topic if names(t) in existing], names)
        self._wait_for_leaders(admin, names.all())
        for topic in names.all():
            count = existing.get(topic)
            if count is not None and count != kafka.partitions:
                self.progress(
                    f"kafka: topic {topic} has {count} partitions (settings say "
                    f"{kafka.partitions}); left unchanged"
                )

    def ensure_schemas(self, prefix: str | None = None) -> None:
        """Register every committed schema version under each topic's subject for the prefix
        (default: the settings'), oldest first, with the compatibility rule of the settings.
        Idempotent; also works against docker compose's registry. SchemaRefusedError when a
        version is incompatible or a registered one was edited (nothing registered then);
        StackError when the registry does not answer."""
        settings = self.settings
        if prefix is not None and prefix != settings.kafka.topic_prefix:
            kafka = settings.kafka.model_copy(update={"topic_prefix": prefix})
            settings = settings.model_copy(update={"kafka": kafka})
        try:
            reports = register(settings, progress=self.progress)
        except CompatibilityError as exc:
            raise SchemaRefusedError(
                f"registry: {exc}\n(a version already registered never changes: put the change in "
                "a new version file; in a local stack, `lightbox stack reset` forgets every schema)"
            ) from exc
        except RegistryUnavailableError as exc:
            raise StackError(f"registry: {exc}") from exc
        added = sum(len(r.registered_now) for r in reports)
        self.progress(
            f"registry: {len(reports)} subjects under prefix {settings.kafka.topic_prefix!r} up to "
            f"date ({added} versions registered now, rule {settings.registry.compatibility})"
        )

    def ensure_bucket(self) -> None:
        bucket = self.settings.storage.bucket
        try:
            ObjectStore(self.settings.storage).ensure_bucket()
        except (MinioException, HTTPError, OSError) as exc:
            raise StackError(
                f"minio: could not create bucket {bucket!r} on {self.settings.storage.endpoint}: "
                f"{exc}. If "
                "MinIO was started by someone else, its credentials may differ from "
                "storage.access_key/secret_key."
            ) from exc
        self.progress(f"minio: bucket {bucket!r} ready on {self.settings.storage.endpoint}")

    # Internals.

    def _down(self) -> None:
        for service in reversed(self.services):
            service.stop()
        self.progress(f"local stack stopped; data kept in {self.settings.data_dir}")

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """One stack operation at a time per LIGHTBOX_HOME (parallel test workers, two shells)."""
        self.settings.home.mkdir(parents=True, exist_ok=True)
        with Path(self.settings.home / ".stack.lock").open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def delete_topics(self, prefix: str) -> list[str]:
        """Delete the pipeline's topics under `prefix` (never the default, unprefixed ones), for
        throwaway sessions such as the bench's: each leaves a dozen topics behind otherwise, and a
        broker holding hundreds of them does more work idle. Returns the names deleted."""
        if not prefix:
            raise ValueError("refusing to delete the unprefixed pipeline topics")
        admin = admin_client(self.settings.kafka.bootstrap)
        existing = self._topic_metadata(admin)
        doomed = [name for name in TopicNames(prefix).all() if name in existing]
        if not doomed:
            return []
        for name, future in admin.delete_topics(doomed, request_timeout=30).items():
            try:
                future.result()
            except KafkaException as exc:
                raise StackError(f"kafka: could not delete topic {name}: {exc.args[0]}") from exc
        return doomed

    def _topic_metadata(self, admin: AdminClient) -> dict[str, int]:
        try:
            metadata = admin.list_topics(timeout=10)
        except KafkaException as exc:
            raise StackError(f"kafka: cannot reach {self.settings.kafka.bootstrap}: {exc}") from exc
        return {name: len(topic.partitions) for name, topic in metadata.topics.items()}

    def _align_configs(self, admin: AdminClient, topics: list[Topic], names: TopicNames) -> None:
        """Give topics that predate a retention or compaction rule that rule (SET is idempotent,
        and other settings of the topic are left as they are)."""
        resources = [
            ConfigResource(
                ResourceType.TOPIC,
                names(topic),
                incremental_configs=[
                    ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)
                    for key, value in topic_configs(topic).items()
                ],
            )
            for topic in topics
            if topic_configs(topic)
        ]
        if not resources:
            return
        for resource, future in admin.incremental_alter_configs(resources).items():
            try:
                future.result()
            except KafkaException as exc:
                raise StackError(f"kafka: could not set the config of topic {resource.name}: {exc}") from exc

    def _created(self, name: str, future: Future[None]) -> None:
        try:
            future.result()
        except KafkaException as exc:
            error = exc.args[0]
            if isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                return  # created concurrently by someone else: fine
            raise StackError(f"kafka: could not create topic {name}: {error}") from exc

    def _wait_for_leaders(self, admin: AdminClient, topics: list[str], timeout_s: float = 30) -> None:
        """Creation returns before every partition has a leader; a producer started right after
        `up` would otherwise see UNKNOWN_TOPIC_OR_PART on its first send."""
        deadline = time.monotonic() + timeout_s
        while True:
            metadata = admin.list_topics(timeout=10)
            pending = [
                name
                for name in topics
                if name not in metadata.topics
                or metadata.topics[name].error is not None
                or any(p.leader < 0 for p in metadata.topics[name].partitions.values())
            ]
            if not pending:
                return
            if time.monotonic() > deadline:
                raise StackError(
                    f"kafka: topics without a leader after {timeout_s:.0f} s: {', '.join(pending)}"
                )
            time.sleep(0.2)
