"""Shared fixtures. Services are real and session-scoped: one Kafka, one MinIO, one pipeline.

Where a Docker engine is available and LIGHTBOX_TEST_DOCKER=1, testcontainers starts Kafka and
MinIO; otherwise the project's local stack does (`lightbox stack up`: the same code users run).
Either way every test session works under its own topic prefix and its own embedded ClickHouse, so
it never sees another run's data.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from processors.config import Settings, load_settings


def _docker_usable() -> bool:
    if os.environ.get("LIGHTBOX_TEST_DOCKER") != "1" or shutil.which("docker") is None:
        return False
    try:
        import docker  # type: ignore[import-not-found]

        docker.from_env().ping()
    except Exception:
        return False
    return True


MEMORY_REGISTRY_URL = "mock://lightbox-unit"


@pytest.fixture(autouse=True)
def _unit_registry(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Unit tests run stages on the in-memory broker: their settings name the in-process registry
    (real Confluent framing, schemas registered from schemas/avro), so no test needs the stack's
    registry unless it is an integration test."""
    if "integration" in request.keywords:
        return
    parts = Path(str(request.node.path)).parts
    if "unit" in parts or "fuzz" in parts:
        monkeypatch.setenv("LIGHTBOX_REGISTRY__URL", MEMORY_REGISTRY_URL)


@pytest.fixture(scope="session")
def stack_settings() -> Iterator[Settings]:
    """Settings pointing at a running Kafka and MinIO. On the local stack, the topics the session
    creates are deleted when it ends (tests/support/created_topics.py); testcontainers' broker
    goes with its container."""
    from schemas.topics import TopicNames
    from tests.support.created_topics import deleted_at_exit

    settings = load_settings()
    if _docker_usable():
        from testcontainers.kafka import KafkaContainer  # type: ignore[import-not-found]
        from testcontainers.minio import MinioContainer  # type: ignore[import-not-found]

        with KafkaContainer("apache/kafka:4.4.0").with_kraft() as kafka, MinioContainer() as minio:
            cfg = minio.get_config()
            os.environ["LIGHTBOX_KAFKA__BOOTSTRAP"] = kafka.get_bootstrap_server()
            os.environ["LIGHTBOX_STORAGE__ENDPOINT"] = cfg["endpoint"]
            os.environ["LIGHTBOX_STORAGE__ACCESS_KEY"] = cfg["access_key"]
            os.environ["LIGHTBOX_STORAGE__SECRET_KEY"] = cfg["secret_key"]
            settings = load_settings()
            from processors.storage import ObjectStore

            ObjectStore(settings.storage).ensure_bucket()
            yield settings
        return
    from deploy.local.stack import LocalStack

    LocalStack(settings).up()
    # The settings' own pipeline topics (a LIGHTBOX_KAFKA__TOPIC_PREFIX of the user's) stay.
    own = frozenset(TopicNames(settings.kafka.topic_prefix).all())
    with deleted_at_exit(settings.kafka.bootstrap, keep=own):
        yield settings


@pytest.fixture(scope="session")
def store(stack_settings: Settings):  # type: ignore[no-untyped-def]
    """The stack's object store, bucket ensured."""
    from processors.storage import ObjectStore

    object_store = ObjectStore(stack_settings.storage)
    object_store.ensure_bucket()
    return object_store


@pytest.fixture(scope="session")
def pipeline(stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """Every stage running as its own process under a fresh topic prefix."""
    from deploy.local.session import PipelineSession, free_port

    clickhouse_dir = tmp_path_factory.mktemp("clickhouse")
    query_port = free_port()
    settings = stack_settings.model_copy(
        update={
            "clickhouse": stack_settings.clickhouse.model_copy(
                update={"embedded_path": str(clickhouse_dir), "query_port": query_port}
            ),
            "stage": stack_settings.stage.model_copy(update={"backoff_initial_s": 0.05, "max_attempts": 3}),
        }
    )
    env = {
        "LIGHTBOX_CLICKHOUSE__EMBEDDED_PATH": str(clickhouse_dir),
        "LIGHTBOX_CLICKHOUSE__QUERY_PORT": str(query_port),
        "LIGHTBOX_STAGE__BACKOFF_INITIAL_S": "0.05",
        "LIGHTBOX_STAGE__MAX_ATTEMPTS": "3",
    }
    session = PipelineSession(settings, prefix=f"test-{uuid.uuid4().hex[:8]}.", env=env)
    session.start(start_stack=False)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def catalog_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """The sample product images, served on loopback like a catalog's image host."""
    from deploy.local.session import StaticServer
    from gateway.harness.sample_catalog import make_sample_products

    directory: Path = tmp_path_factory.mktemp("catalog")
    products = make_sample_products(directory)
    server = StaticServer(directory)
    server.products = products  # type: ignore[attr-defined]
    yield server
    server.close()
