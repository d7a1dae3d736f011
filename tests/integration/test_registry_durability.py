"""The local registry keeps its schemas in Kafka: what was registered survives a restart, with the
same ids. Runs a second registry (its own home, ports and journal topics) on the stack's Kafka,
so the stack's own registry is never restarted under other tests."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException

from deploy.local.kafka import admin_client
from deploy.local.registry import RegistryService
from deploy.local.session import free_port
from processors.config import Settings
from schemas.compat import check, register
from schemas.confluent_serde import ConfluentSerdes
from schemas.registry import default_registry
from schemas.registry_client import make_client, subject_name
from schemas.topics import SCHEMA_OF, Topic
from tests.fixtures.avro_samples import SAMPLES

pytestmark = pytest.mark.integration


@pytest.fixture
def own_registry(stack_settings: Settings, tmp_path: Path) -> Iterator[RegistryService]:
    tag = uuid.uuid4().hex[:8]
    registry = stack_settings.registry.model_copy(
        update={
            "url": f"http://127.0.0.1:{free_port()}/apis/ccompat/v7",
            "management_port": free_port(),
            "journal_topic": f"test-{tag}-kafkasql-journal",
            "snapshots_topic": f"test-{tag}-kafkasql-snapshots",
        }
    )
    settings = stack_settings.model_copy(
        update={
            # Its own data and pid files; the installed archive is shared with the stack's cache.
            "home": tmp_path / "home",
            "registry": registry,
            "kafka": stack_settings.kafka.model_copy(update={"topic_prefix": f"dur-{tag}."}),
        }
    )
    settings.home.mkdir()
    (settings.home / "cache").symlink_to(stack_settings.cache_dir)
    service = RegistryService(settings, progress=lambda _: None)
    yield service
    service.stop()
    admin = admin_client(stack_settings.kafka.bootstrap)
    for future in admin.delete_topics([registry.journal_topic, registry.snapshots_topic]).values():
        try:
            future.result()
        except KafkaException as exc:  # never created: the test failed before the registry wrote
            if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise


def start(service: RegistryService) -> None:
    since = service.start()
    service.wait_ready(time.monotonic() + 180, since)


def test_registered_schemas_and_ids_survive_a_registry_restart(own_registry: RegistryService) -> None:
    settings = own_registry.settings
    # Every version committed in the tree, oldest first, as `lightbox stack up` registers them.
    committed = [v.version for v in default_registry().versions(SCHEMA_OF[Topic.CATALOG_EVENTS])]
    start(own_registry)
    register(settings)
    subject = subject_name(Topic.CATALOG_EVENTS, settings.kafka.topic_prefix)
    client = make_client(settings.registry)
    before = client.get_versions(subject)
    newest = client.get_latest_version(subject)
    serdes = ConfluentSerdes(settings.registry, settings.kafka.topic_prefix)
    payload = serdes(Topic.CATALOG_EVENTS).encode(SAMPLES[("catalog_event", committed[-1])])

    own_registry.stop()
    assert not own_registry.healthy()
    start(own_registry)

    fresh = make_client(settings.registry)  # no client-side cache carried over
    assert fresh.get_versions(subject) == before == committed
    assert fresh.get_latest_version(subject).schema_id == newest.schema_id
    assert fresh.get_compatibility(subject) == "BACKWARD"
    assert all(r.ok and not r.pending for r in check(settings))
    # Data written before the restart still names a schema the registry knows.
    after = ConfluentSerdes(settings.registry, settings.kafka.topic_prefix)
    decoded = after(Topic.CATALOG_EVENTS).decode(payload)
    assert decoded["event_id"] == SAMPLES[("catalog_event", committed[-1])]["event_id"]
