"""docker-compose.yml parses and says what the rest of the project assumes: one service per stage
of the topology plus the infrastructure and its init; each stage waits for init, init for healthy
infrastructure; the ports it publishes on the host are the settings' defaults (so host tools reach
it exactly as they reach the local stack); the stages' settings inside the compose network name
the services and the credentials those services are started with.

Docker is not needed: this reads the file as `docker compose` would (YAML, anchors and merge keys).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from processors.config import ClickHouseSettings, KafkaSettings, RegistrySettings, Settings, StorageSettings
from processors.topology import STAGE_NAMES

ROOT = Path(__file__).resolve().parents[2]
INFRASTRUCTURE = {"kafka", "minio", "registry", "clickhouse"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def published(service: dict[str, Any]) -> dict[int, tuple[str, int]]:
    """Container port -> (host address, host port), from "host:hostport:port" entries."""
    ports = {}
    for entry in service.get("ports", []):
        host, host_port, port = str(entry).rsplit(":", 2)
        ports[int(port)] = (host, int(host_port))
    return ports


def stage_env(services: dict[str, dict[str, Any]], stage: str) -> dict[str, str]:
    return {key: str(value) for key, value in services[stage]["environment"].items()}


def host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def test_there_is_a_service_per_stage_and_per_dependency(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == INFRASTRUCTURE | {"init"} | set(STAGE_NAMES)
    for stage in STAGE_NAMES:
        assert services[stage]["command"] == ["run", stage]
        assert services[stage]["image"] == services["init"]["image"], "one image for every process"


def test_stages_wait_for_init_and_init_for_healthy_infrastructure(
    services: dict[str, dict[str, Any]],
) -> None:
    for stage in STAGE_NAMES:
        depends = services[stage]["depends_on"]
        assert depends["init"] == {"condition": "service_completed_successfully"}, stage
    # The sink writes to the ClickHouse server its settings name.
    assert services["eventlog"]["depends_on"]["clickhouse"] == {"condition": "service_healthy"}
    init = services["init"]["depends_on"]
    assert {name: dep["condition"] for name, dep in init.items()} == dict.fromkeys(
        {"kafka", "minio", "registry"}, "service_healthy"
    )
    assert services["registry"]["depends_on"]["kafka"]["condition"] == "service_healthy", "stored in Kafka"
    for name, service in services.items():
        for dependency, condition in service.get("depends_on", {}).items():
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], f"{name} waits on {dependency}'s health"
    assert services["init"]["restart"] == "no", "a one-shot job, not restarted once it has exited"


def test_init_creates_what_the_stages_need(services: dict[str, dict[str, Any]]) -> None:
    code = "\n".join(services["init"]["command"])
    compile(code, "init", "exec")
    for step in ("ensure_topics", "ensure_bucket", "ensure_schemas"):
        assert f"{step}()" in code


def test_the_host_ports_are_the_settings_defaults(services: dict[str, dict[str, Any]]) -> None:
    kafka, storage, registry = KafkaSettings(), StorageSettings(), RegistrySettings()
    # Only on loopback: nothing of this (MinIO's root keys, a plaintext broker) faces the network.
    for name, service in services.items():
        assert all(host == "127.0.0.1" for host, _ in published(service).values()), name

    broker = services["kafka"]["environment"]
    bootstrap_host, bootstrap_port = host_port(kafka.bootstrap)
    assert f"HOST://{kafka.bootstrap}" in broker["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert f"HOST://:{bootstrap_port}" in broker["KAFKA_LISTENERS"].split(",")
    assert published(services["kafka"])[bootstrap_port] == (bootstrap_host, bootstrap_port)

    minio = services["minio"]
    command = minio["command"]
    api_port = int(command[command.index("--address") + 1].lstrip(":"))
    console_port = int(command[command.index("--console-address") + 1].lstrip(":"))
    assert published(minio)[api_port] == host_port(storage.endpoint)
    assert published(minio)[console_port] == ("127.0.0.1", storage.console_port)

    registry_url = urlsplit(registry.url)
    assert published(services["registry"])[8080] == (registry_url.hostname, registry_url.port)
    assert published(services["registry"])[9000] == ("127.0.0.1", registry.management_port)

    assert published(services["clickhouse"])[8123] == ("127.0.0.1", 8123)


def test_the_stages_settings_name_the_services(services: dict[str, dict[str, Any]]) -> None:
    for stage in STAGE_NAMES:
        env = stage_env(services, stage)
        broker = services["kafka"]["environment"]
        assert f"PLAINTEXT://{env['LIGHTBOX_KAFKA__BOOTSTRAP']}" in broker[
            "KAFKA_ADVERTISED_LISTENERS"
        ].split(",")
        assert env["LIGHTBOX_KAFKA__PARTITIONS"] == str(broker["KAFKA_NUM_PARTITIONS"])

        minio = services["minio"]
        host, port = host_port(env["LIGHTBOX_STORAGE__ENDPOINT"])
        assert host == "minio" and f":{port}" in minio["command"]
        assert env["LIGHTBOX_STORAGE__ACCESS_KEY"] == minio["environment"]["MINIO_ROOT_USER"]
        assert env["LIGHTBOX_STORAGE__SECRET_KEY"] == minio["environment"]["MINIO_ROOT_PASSWORD"]

        url = urlsplit(env["LIGHTBOX_REGISTRY__URL"])
        assert (url.hostname, url.port) == ("registry", 8080)
        assert url.path == urlsplit(RegistrySettings().url).path

        clickhouse = services["clickhouse"]["environment"]
        url = urlsplit(env["LIGHTBOX_CLICKHOUSE__URL"])
        assert (url.hostname, url.port) == ("clickhouse", 8123)
        assert (url.username, url.password) == (
            clickhouse["CLICKHOUSE_USER"],
            clickhouse["CLICKHOUSE_PASSWORD"],
        )
        assert env["LIGHTBOX_CLICKHOUSE__DATABASE"] == clickhouse["CLICKHOUSE_DB"]


def test_the_compose_stack_matches_what_default_settings_expect(services: dict[str, dict[str, Any]]) -> None:
    """Host tools with default settings (no environment) talk to this stack: same keys, bucket,
    database and registry storage as the local stack."""
    storage, registry = StorageSettings(), RegistrySettings()
    env = stage_env(services, "intake")
    minio = services["minio"]["environment"]
    assert (minio["MINIO_ROOT_USER"], minio["MINIO_ROOT_PASSWORD"]) == (
        storage.access_key,
        storage.secret_key,
    )
    assert minio["MINIO_SCANNER_SPEED"] == storage.minio_scanner_speed
    assert env["LIGHTBOX_STORAGE__BUCKET"] == storage.bucket
    assert env["LIGHTBOX_CLICKHOUSE__DATABASE"] == ClickHouseSettings().database
    apicurio = services["registry"]["environment"]
    assert apicurio["APICURIO_STORAGE_KIND"] == "kafkasql"
    assert apicurio["APICURIO_KAFKASQL_TOPIC"] == registry.journal_topic
    assert apicurio["APICURIO_KAFKASQL_SNAPSHOTS_TOPIC"] == registry.snapshots_topic
    assert services["registry"]["image"].endswith(":" + registry.version), "the version the tests run"


def test_every_stage_setting_is_one_lightbox_reads(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in [k for k in os.environ if k.startswith("LIGHTBOX_")]:
        monkeypatch.delenv(key)
    for stage in STAGE_NAMES:
        env = stage_env(services, stage)
        for key, value in env.items():
            # Settings ignores unknown LIGHTBOX_ variables: a misspelt key would be lost silently.
            model: Any = Settings
            for part in key.removeprefix("LIGHTBOX_").lower().split("__"):
                assert part in model.model_fields, f"{stage}: {key} names no setting"
                model = model.model_fields[part].annotation
            monkeypatch.setenv(key, value)
        settings = Settings()
        assert settings.kafka.bootstrap == env["LIGHTBOX_KAFKA__BOOTSTRAP"]
        assert settings.clickhouse.url == env["LIGHTBOX_CLICKHOUSE__URL"]


def test_every_named_volume_is_declared(compose: dict[str, Any]) -> None:
    used = {
        str(volume).split(":")[0]
        for service in compose["services"].values()
        for volume in service.get("volumes", [])
        if not str(volume).startswith((".", "/"))
    }
    assert used <= set(compose["volumes"])
