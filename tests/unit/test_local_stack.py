"""The local stack without its services: config rendering, version and port plumbing, tool checks,
and the process bookkeeping (driven with a tiny stand-in server instead of Kafka or MinIO)."""

from __future__ import annotations

import base64
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.local import kafka as kafka_mod
from deploy.local import minio as minio_mod
from deploy.local.kafka import (
    KafkaService,
    java_major_version,
    new_cluster_id,
    render_pom,
    render_server_properties,
)
from deploy.local.minio import MinioService, go_version
from deploy.local.registry import RegistryService
from deploy.local.service import (
    TAIL_LINES,
    ManagedService,
    parse_loopback,
    pid_alive,
    port_open,
    tail,
)
from deploy.local.session import free_port
from deploy.local.stack import LocalStack, ServiceStatus, StackError, topic_configs
from processors.config import KafkaSettings, RegistrySettings, Settings, StorageSettings
from schemas.topics import Topic


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.delenv("LIGHTBOX_CONFIG", raising=False)
    return Settings(
        home=tmp_path / "home",
        kafka=KafkaSettings(bootstrap=f"127.0.0.1:{free_port()}", controller_port=free_port()),
        storage=StorageSettings(endpoint=f"127.0.0.1:{free_port()}", console_port=free_port()),
        registry=RegistrySettings(
            url=f"http://127.0.0.1:{free_port()}/apis/ccompat/v7", management_port=free_port()
        ),
    )


def props(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


# --- Kafka config ----------------------------------------------------------------------------


def test_server_properties_combined_kraft_on_loopback(settings: Settings) -> None:
    port = int(settings.kafka.bootstrap.rsplit(":", 1)[1])
    cport = settings.kafka.controller_port
    rendered = props(render_server_properties(settings, Path("/data/kraft")))
    assert rendered["process.roles"] == "broker,controller"
    assert rendered["node.id"] == "1"
    assert rendered["controller.quorum.voters"] == f"1@127.0.0.1:{cport}"
    assert rendered["listeners"] == f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}"
    assert rendered["advertised.listeners"] == f"PLAINTEXT://127.0.0.1:{port}"
    assert rendered["controller.listener.names"] == "CONTROLLER"
    assert rendered["log.dirs"] == "/data/kraft"
    assert rendered["num.partitions"] == str(settings.kafka.partitions)
    assert rendered["offsets.topic.replication.factor"] == "1"
    assert rendered["transaction.state.log.replication.factor"] == "1"
    assert rendered["transaction.state.log.min.isr"] == "1"
    assert rendered["group.initial.rebalance.delay.ms"] == "0"


def test_partitions_setting_reaches_the_broker(settings: Settings) -> None:
    settings.kafka.partitions = 7
    assert props(render_server_properties(settings, Path("/x")))["num.partitions"] == "7"


def test_kafka_files_live_under_the_configured_dirs(settings: Settings) -> None:
    service = KafkaService(settings, print)
    service.write_config()
    assert service.config_file.parent == settings.data_dir / "kafka"
    rendered = props(service.config_file.read_text())
    assert Path(rendered["log.dirs"]).is_relative_to(settings.data_dir / "kafka")
    assert service.log_file == settings.log_dir / "kafka.log"
    # Kafka 4 logs through log4j 2: its properties format, one console appender.
    assert "appender.stdout.type = Console" in service.log4j_file.read_text()


@pytest.mark.parametrize("address", ["10.0.0.5:9092", "kafka:9092", "0.0.0.0:9092"])
def test_non_loopback_addresses_are_refused(address: str) -> None:
    with pytest.raises(StackError, match="loopback"):
        parse_loopback(address, "kafka.bootstrap")


def test_loopback_address_forms() -> None:
    assert parse_loopback("localhost:29092", "kafka.bootstrap") == 29092
    assert parse_loopback("127.0.0.1:29092,127.0.0.1:29094", "kafka.bootstrap") == 29092
    with pytest.raises(StackError, match="host:port"):
        parse_loopback("127.0.0.1", "kafka.bootstrap")


def test_compose_style_addresses_still_allow_topic_and_bucket_setup(settings: Settings) -> None:
    # ensure_topics/ensure_bucket also serve docker compose (kafka:9092); only running the
    # services locally insists on loopback.
    settings.kafka.bootstrap = "kafka:9092"
    settings.storage.endpoint = "minio:9000"
    stack = LocalStack(settings, progress=lambda _: None)
    with pytest.raises(StackError, match="loopback"):
        stack.status()


def test_controller_port_must_differ(settings: Settings) -> None:
    settings.kafka.controller_port = int(settings.kafka.bootstrap.rsplit(":", 1)[1])
    with pytest.raises(StackError, match="controller_port"):
        render_server_properties(settings, Path("/x"))


def test_pom_pins_the_configured_versions() -> None:
    pom = ET.fromstring(render_pom("3.8.0", "2.12"))
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    deps = {
        d.findtext("m:artifactId", namespaces=ns): d.findtext("m:version", namespaces=ns)
        for d in pom.iterfind("m:dependencies/m:dependency", ns)
    }
    assert deps == {"kafka_2.12": "3.8.0", "slf4j-reload4j": "1.7.36"}


def test_pom_of_a_4x_broker_binds_slf4j_to_log4j2() -> None:
    pom = ET.fromstring(render_pom("4.4.0", "2.13"))
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    artifacts = {
        d.findtext("m:artifactId", namespaces=ns) for d in pom.iterfind("m:dependencies/m:dependency", ns)
    }
    assert artifacts == {"kafka_2.13", "log4j-slf4j-impl"}


def test_4x_broker_gets_share_groups_and_broker_side_session_timeouts(settings: Settings) -> None:
    assert settings.kafka.version.startswith("4.")
    settings.stage.session_timeout_ms = 9000
    rendered = props(render_server_properties(settings, Path("/x")))
    # One broker: the share coordinator's state topic cannot have three replicas.
    assert rendered["share.coordinator.state.topic.replication.factor"] == "1"
    # KIP-848 and share groups time members out at the broker: the stages' own timeout.
    assert rendered["group.consumer.session.timeout.ms"] == "9000"
    assert rendered["group.share.session.timeout.ms"] == "9000"
    assert int(rendered["group.consumer.heartbeat.interval.ms"]) < 9000
    settings.kafka.version = "3.9.1"
    old = props(render_server_properties(settings, Path("/x")))
    assert not any(key.startswith(("group.consumer.", "group.share.", "share.")) for key in old)


def test_versions_choose_the_cache_dirs(settings: Settings) -> None:
    settings.kafka.version = "3.8.0"
    settings.storage.minio_version = "v0.0.0-20250101000000-abcdefabcdef"
    kafka = KafkaService(settings, print)
    minio = MinioService(settings, print)
    assert kafka.libs == settings.cache_dir / "kafka-3.8.0" / "libs"
    assert minio.binary.parent.parent == settings.cache_dir / f"minio-{minio.version}"
    assert kafka.address == settings.kafka.bootstrap
    assert minio.address == settings.storage.endpoint


def test_cluster_id_shape() -> None:
    for _ in range(500):
        value = new_cluster_id()
        assert len(value) == 22
        assert not value.startswith("-")
        assert len(base64.urlsafe_b64decode(value + "==")) == 16


def test_cluster_id_is_created_once_and_kept(settings: Settings) -> None:
    service = KafkaService(settings, print)
    first = service.cluster_id()
    assert KafkaService(settings, print).cluster_id() == first
    assert service.cluster_id_file.read_text().strip() == first


def test_cluster_id_of_an_already_formatted_dir_is_reused(settings: Settings) -> None:
    service = KafkaService(settings, print)
    service.log_dirs.mkdir(parents=True)
    (service.log_dirs / "meta.properties").write_text("version=1\ncluster.id=AbCdEfGhIjKlMnOpQrStUv\n")
    assert service.formatted()
    assert service.cluster_id() == "AbCdEfGhIjKlMnOpQrStUv"


@pytest.mark.parametrize("formatted_by", [None, "3.9.1"])
def test_a_data_dir_an_older_broker_formatted_is_refused_with_the_way_out(
    settings: Settings, formatted_by: str | None
) -> None:
    service = KafkaService(settings, print)
    service._java = "/opt/java/bin/java"  # prepare() stops before it would run java
    service.log_dirs.mkdir(parents=True)
    (service.log_dirs / "meta.properties").write_text("version=1\ncluster.id=AbCdEfGhIjKlMnOpQrStUv\n")
    if formatted_by:
        service.formatted_by_file.write_text(formatted_by + "\n")
    with pytest.raises(StackError, match=r"lightbox stack reset.*group_protocol=classic"):
        service.prepare()
    service.formatted_by_file.write_text("4.4.0\n")  # formatted by this stack: used as it is
    service.prepare()


def test_kafka_command_line(settings: Settings) -> None:
    service = KafkaService(settings, print)
    service._java = "/opt/java/bin/java"  # no java needed to check the command line
    argv = service.command()
    assert argv[0] == "/opt/java/bin/java"
    assert "-Xmx512m" in argv
    assert f"-Dlog4j2.configurationFile={service.log4j_file}" in argv
    assert argv[argv.index("-cp") + 1] == f"{service.libs}/*"
    assert argv[-2:] == ["kafka.Kafka", str(service.config_file)]
    assert service.marker in " ".join(argv)


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('java version "1.8.0_392"', 8),
        ('openjdk version "21" 2023-09-19', 21),
        ("garbage", None),
    ],
)
def test_java_major_version(output: str, major: int | None) -> None:
    assert java_major_version(output) == major


# --- tools missing ---------------------------------------------------------------------------


@pytest.fixture
def empty_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


@pytest.mark.usefixtures("empty_path")
def test_missing_java_says_what_to_install(settings: Settings) -> None:
    with pytest.raises(StackError, match="`java` was not found") as info:
        KafkaService(settings, print).java()
    assert "openjdk-17-jre-headless" in str(info.value)


@pytest.mark.usefixtures("empty_path")
def test_missing_maven_says_what_to_install(settings: Settings) -> None:
    with pytest.raises(StackError, match="`mvn` was not found") as info:
        KafkaService(settings, print).install()
    assert "apt-get install maven" in str(info.value)


@pytest.mark.usefixtures("empty_path")
def test_missing_go_says_what_to_install(settings: Settings) -> None:
    with pytest.raises(StackError, match="`go` was not found") as info:
        MinioService(settings, print).install()
    assert "apt-get install golang" in str(info.value)


@pytest.mark.usefixtures("empty_path")
def test_cached_tools_need_no_toolchain(settings: Settings) -> None:
    kafka = KafkaService(settings, print)
    kafka.libs.mkdir(parents=True)
    (kafka.libs / f"kafka_2.13-{settings.kafka.version}.jar").touch()
    (kafka.home / ".complete").touch()
    minio = MinioService(settings, print)
    minio.binary.parent.mkdir(parents=True)
    minio.binary.touch(mode=0o755)
    registry = RegistryService(settings, print)
    registry.app_dir.mkdir(parents=True)
    registry.runner_jar.touch()
    (registry.home / ".complete").touch()
    LocalStack(settings, progress=lambda _: None).install()  # no mvn or go on PATH: no error


def test_half_resolved_jars_do_not_count_as_installed(settings: Settings) -> None:
    kafka = KafkaService(settings, print)
    kafka.libs.mkdir(parents=True)
    (kafka.libs / f"kafka_2.13-{settings.kafka.version}.jar").touch()
    assert not kafka.installed()


def test_go_version_parsing() -> None:
    assert go_version("go version go1.26.8 linux/amd64") == (1, 26)
    assert go_version("go version go1.19.8 linux/amd64") < minio_mod.MIN_GO


def test_minio_refuses_what_it_would_only_complain_about_in_its_log(settings: Settings) -> None:
    settings.storage.secret_key = "short"
    with pytest.raises(StackError, match="secret_key"):
        MinioService(settings, print).prepare()
    settings.storage.secret_key = "long-enough"
    settings.storage.secure = True
    with pytest.raises(StackError, match="SECURE=false"):
        MinioService(settings, print).prepare()


def test_minio_command_and_credentials(settings: Settings) -> None:
    service = MinioService(settings, print)
    argv = service.command()
    assert argv[:3] == [str(service.binary), "server", str(settings.data_dir / "minio")]
    assert argv[argv.index("--address") + 1] == settings.storage.endpoint
    console = f"127.0.0.1:{settings.storage.console_port}"
    assert argv[argv.index("--console-address") + 1] == console
    env = service.env()
    assert env["MINIO_ROOT_USER"] == settings.storage.access_key
    assert env["MINIO_ROOT_PASSWORD"] == settings.storage.secret_key
    # The scanner's walk every minute costs CPU beside whatever runs on the stack's cores.
    assert env["MINIO_SCANNER_SPEED"] == "slowest"
    faster = settings.model_copy(
        update={"storage": settings.storage.model_copy(update={"minio_scanner_speed": "default"})}
    )
    assert MinioService(faster, print).env()["MINIO_SCANNER_SPEED"] == "default"


def test_topic_retention() -> None:
    assert topic_configs(Topic.PIPELINE_DLQ)["retention.ms"] == "-1"
    assert int(topic_configs(Topic.PIPELINE_EVENTS)["retention.ms"]) >= 7 * 24 * 3600 * 1000
    assert topic_configs(Topic.JOBS_ACCEPTED) == {}


# --- logs ------------------------------------------------------------------------------------


def test_tail_keeps_the_last_lines_of_this_run(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("".join(f"old {i}\n" for i in range(5)))
    since = log.stat().st_size
    with log.open("a") as fh:
        fh.writelines(f"line {i}\n" for i in range(100))
    lines = tail(log).splitlines()
    assert len(lines) == TAIL_LINES
    assert lines[-1] == "line 99"
    assert tail(log, lines=200, since=since).splitlines()[0] == "line 0"
    assert "no log" in tail(tmp_path / "missing.log")


# --- process bookkeeping, with a stand-in server ----------------------------------------------

_SERVER = """
import socket, sys, time
for i in range(int(sys.argv[3])):
    print(f"boot line {i}", flush=True)
if sys.argv[2] == "crash":
    sys.exit(3)
srv = socket.socket()
srv.bind(("127.0.0.1", int(sys.argv[1])))
srv.listen()
while True:
    conn, _ = srv.accept()
    conn.close()
"""


class StandIn(ManagedService):
    """Listens on a port like a server would; healthy means that port accepts connections."""

    name = "standin"
    grace_s = 5.0

    def __init__(self, settings: Settings, port: int, mode: str = "serve", lines: int = 3):
        super().__init__(settings, progress=lambda _: None)
        self.port, self.mode, self.lines = port, mode, lines
        self.installs = 0

    home = property(lambda self: self.settings.cache_dir / "standin")
    data_dir = property(lambda self: self.settings.data_dir / "standin")
    address = property(lambda self: f"127.0.0.1:{self.port}")
    ports = property(lambda self: {self.port: "standin.port"})
    marker = property(lambda self: f"standin-{self.settings.home}")

    def installed(self) -> bool:
        return self.installs > 0

    def install(self) -> None:
        self.installs += 1

    def prepare(self) -> None:
        pass

    def command(self) -> list[str]:
        script = _SERVER + f"# {self.marker}\n"
        return [sys.executable, "-c", script, str(self.port), self.mode, str(self.lines)]

    def healthy(self) -> bool:
        return port_open(self.port)


@pytest.fixture
def standin(settings: Settings) -> Iterator[StandIn]:
    service = StandIn(settings, free_port())
    yield service
    service.stop()


def test_start_detached_reuse_and_stop(standin: StandIn) -> None:
    since = standin.start()
    standin.wait_ready(time.monotonic() + 20, since)
    pid = standin.pid()
    assert pid is not None and pid_alive(pid)
    assert standin.pid_file.read_text().strip() == str(pid)
    assert "boot line 2" in standin.log_file.read_text()

    status = standin.status()
    assert isinstance(status, ServiceStatus)
    assert (status.running, status.pid, status.detail) == (True, pid, "ready")

    # A second start (a second CLI call) finds it and starts nothing new.
    again = StandIn(standin.settings, standin.port)
    again.start()
    assert again.pid() == pid and again.installs == 0

    standin.stop()
    assert not pid_alive(pid)
    assert not standin.pid_file.exists()
    assert standin.status().running is False


def test_early_exit_fails_with_name_and_log_tail(settings: Settings) -> None:
    service = StandIn(settings, free_port(), mode="crash", lines=100)
    since = service.start()
    with pytest.raises(StackError) as info:
        service.wait_ready(time.monotonic() + 20, since)
    message = str(info.value)
    assert message.startswith("standin: exited during startup")
    assert str(service.log_file) in message
    assert "boot line 99" in message
    assert "boot line 69" not in message  # only the last 30 lines


def test_timeout_fails_with_log_tail(settings: Settings) -> None:
    service = StandIn(settings, free_port())
    service.healthy = lambda: False  # type: ignore[method-assign]
    since = service.start()
    try:
        with pytest.raises(StackError, match=r"not healthy .* before the timeout") as info:
            service.wait_ready(time.monotonic() + 1, since)
        assert "boot line 2" in str(info.value)
    finally:
        service.stop()


def test_port_held_by_a_stranger_is_a_clear_error(settings: Settings) -> None:
    port = free_port()
    service = StandIn(settings, port)
    service.healthy = lambda: False  # type: ignore[method-assign]
    with socket.socket() as stranger:
        stranger.bind(("127.0.0.1", port))
        stranger.listen()
        with pytest.raises(StackError, match=rf"port {port} .*standin\.port.* in use") as info:
            service.start()
    assert "LIGHTBOX_STANDIN__PORT" in str(info.value)
    assert service.installs == 0  # failed before any install or launch


def test_something_healthy_on_the_port_is_reused_not_stopped(settings: Settings) -> None:
    port = free_port()
    service = StandIn(settings, port)
    with socket.socket() as other:
        other.bind(("127.0.0.1", port))
        other.listen()
        service.start()
        assert service.pid() is None and service.installs == 0
        status = service.status()
        assert status.running and "not started by this stack" in status.detail
        service.stop()  # leaves it alone
        assert port_open(port)


def test_stale_pid_file_is_ignored(settings: Settings) -> None:
    service = StandIn(settings, free_port())
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    service.pid_file.parent.mkdir(parents=True)
    service.pid_file.write_text(f"{dead.pid}\n")
    assert service.pid() is None
    assert not service.pid_file.exists()


def test_recycled_pid_of_another_program_is_not_ours(settings: Settings) -> None:
    service = StandIn(settings, free_port())
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        service.pid_file.parent.mkdir(parents=True)
        service.pid_file.write_text(f"{other.pid}\n")
        assert service.pid() is None  # alive, but its command line lacks our marker
    finally:
        other.kill()
        other.wait()


# --- the stack's own surface -----------------------------------------------------------------


def test_status_of_a_stopped_stack(settings: Settings) -> None:
    statuses = LocalStack(settings, progress=lambda _: None).status()
    assert [s.name for s in statuses] == ["kafka", "minio", "registry"]
    for status in statuses:
        assert status.running is False and status.pid is None and status.detail == "stopped"
        assert status.log_file.parent == settings.log_dir
        assert status.data_dir.parent == settings.data_dir
    assert statuses[0].address == settings.kafka.bootstrap
    assert statuses[1].address == settings.storage.endpoint
    assert settings.registry.url.startswith(f"http://{statuses[2].address}/")


def test_up_fails_fast_when_a_port_is_taken(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kafka_mod.KafkaService, "install", lambda self: pytest.fail("installed"))
    port = settings.kafka.controller_port
    with socket.socket() as stranger:
        stranger.bind(("127.0.0.1", port))
        stranger.listen()
        with pytest.raises(StackError, match=f"kafka: port {port}"):
            LocalStack(settings, progress=lambda _: None).up(timeout_s=5)


def test_up_starts_nothing_when_a_later_service_port_is_taken(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kafka_mod.KafkaService, "start", lambda self: pytest.fail("started"))
    port = settings.storage.console_port
    with socket.socket() as stranger:
        stranger.bind(("127.0.0.1", port))
        stranger.listen()
        with pytest.raises(StackError, match=f"minio: port {port}"):
            LocalStack(settings, progress=lambda _: None).up(timeout_s=5)


def test_reset_deletes_only_the_services_data(settings: Settings) -> None:
    stack = LocalStack(settings, progress=lambda _: None)
    for service in stack.services:
        (service.data_dir / "x").mkdir(parents=True)
    keep = settings.data_dir / "clickhouse"
    keep.mkdir()
    stack.reset()
    assert not (settings.data_dir / "kafka").exists()
    assert not (settings.data_dir / "minio").exists()
    assert not (settings.data_dir / "registry").exists()
    assert keep.exists()


def test_a_just_launched_pid_is_trusted_before_it_execs_the_service(settings: Settings) -> None:
    # Right after launch the child can still be the launcher (its command line lacks the
    # service's marker): within the grace period that must read as "starting", not "exited".
    minio = MinioService(settings, print)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(20)"])
    try:
        minio.pid_file.parent.mkdir(parents=True, exist_ok=True)
        minio.pid_file.write_text(f"{child.pid}\n")
        minio._launched_at = time.monotonic()
        assert minio.pid() == child.pid
        # Long after launch, a process without the marker is someone else's: the pid file is stale.
        minio._launched_at = time.monotonic() - 3600
        assert minio.pid() is None
        assert not minio.pid_file.exists()
    finally:
        child.kill()
        child.wait()


# --- the registry in the stack -----------------------------------------------------------------


def test_up_without_java_21_fails_before_starting_anything(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from deploy.local import registry as registry_mod

    monkeypatch.setattr(registry_mod, "JVM_ROOTS", ())
    monkeypatch.delenv("JAVA_HOME", raising=False)
    empty = tmp_path / "no-java"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setattr(kafka_mod.KafkaService, "start", lambda self: pytest.fail("started kafka"))
    with pytest.raises(StackError, match="needs Java 21 or newer"):
        LocalStack(settings, progress=lambda _: None).up(timeout_s=5)


def test_up_fails_fast_when_the_registry_port_is_taken(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kafka_mod.KafkaService, "start", lambda self: pytest.fail("started kafka"))
    port = settings.registry.management_port
    with socket.socket() as stranger:
        stranger.bind(("127.0.0.1", port))
        stranger.listen()
        with pytest.raises(StackError, match=rf"registry: port {port} .*registry\.management_port"):
            LocalStack(settings, progress=lambda _: None).up(timeout_s=5)


def test_registry_starts_once_kafka_answers_and_schemas_follow_topics(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    stack = LocalStack(settings, progress=lambda _: None)
    polls = {"kafka": 0}

    def ready(service: ManagedService) -> bool:
        if service.name == "kafka":
            polls["kafka"] += 1
            done = polls["kafka"] >= 3  # Kafka answers on its third look
        else:
            done = True
        if done:
            events.append(f"{service.name} ready")
        return done

    for service in stack.services:
        monkeypatch.setattr(service, "preflight", lambda: None)
        monkeypatch.setattr(service, "installed", lambda: True)
        monkeypatch.setattr(service, "running_already", lambda: False)
        monkeypatch.setattr(service, "start", lambda s=service: events.append(f"{s.name} start") or 0)
        monkeypatch.setattr(service, "check_ready", lambda deadline, since, s=service: ready(s))
        monkeypatch.setattr(service, "status", lambda s=service: s.name)
    for step in ("ensure_topics", "ensure_bucket", "ensure_schemas"):
        monkeypatch.setattr(stack, step, lambda step=step: events.append(step))
    monkeypatch.setattr(time, "sleep", lambda _: None)

    assert stack.up(timeout_s=5) == ["kafka", "minio", "registry"]
    assert events.index("registry start") > events.index("kafka ready")
    assert events[:2] == ["kafka start", "minio start"]
    assert events[-3:] == ["ensure_topics", "ensure_bucket", "ensure_schemas"]


def test_down_stops_the_registry_before_kafka(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    stopped: list[str] = []
    stack = LocalStack(settings, progress=lambda _: None)
    for service in stack.services:
        monkeypatch.setattr(service, "stop", lambda s=service: stopped.append(s.name))
    stack.down()
    assert stopped.index("registry") < stopped.index("kafka")


def test_ensure_schemas_registers_for_the_prefix_asked(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deploy.local import stack as stack_mod

    seen: list[str] = []
    monkeypatch.setattr(
        stack_mod, "register", lambda s, progress=None: seen.append(s.kafka.topic_prefix) or []
    )
    stack = LocalStack(settings, progress=lambda _: None)
    stack.ensure_schemas()
    stack.ensure_schemas("test-1234.")
    assert seen == ["", "test-1234."]
    assert settings.kafka.topic_prefix == ""  # the stack's own settings are left alone


def test_a_refused_schema_stops_up_with_the_registrys_message(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deploy.local import stack as stack_mod
    from schemas.compat import CompatibilityError, SubjectReport

    report = SubjectReport("jobs.accepted-value", "job", [1], ["job.v2"], "BACKWARD")
    report.problems.append("schemas/avro/job/v2.avsc is not BACKWARD-compatible: new_required at /fields/9")

    def refuse(settings: Settings, progress: object = None) -> list[SubjectReport]:
        raise CompatibilityError([report])

    monkeypatch.setattr(stack_mod, "register", refuse)
    with pytest.raises(StackError, match=r"(?s)registry: .*new_required at /fields/9"):
        LocalStack(settings, progress=lambda _: None).ensure_schemas()


def test_up_survives_a_refused_schema_and_says_so(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One working tree's edited schema must not stop the shared stack (and every test session,
    # which registers under a prefix of its own) from coming up.
    from deploy.local import stack as stack_mod

    said: list[str] = []
    stack = LocalStack(settings, progress=said.append)
    for service in stack.services:
        monkeypatch.setattr(service, "preflight", lambda: None)
        monkeypatch.setattr(service, "running_already", lambda: True)
        monkeypatch.setattr(service, "start", lambda: 0)
        monkeypatch.setattr(service, "check_ready", lambda deadline, since: True)
        monkeypatch.setattr(service, "status", lambda s=service: s.name)
    monkeypatch.setattr(stack, "ensure_topics", lambda: None)
    monkeypatch.setattr(stack, "ensure_bucket", lambda: None)

    def refuse(settings: Settings, progress: object = None) -> None:
        raise stack_mod.CompatibilityError([])

    monkeypatch.setattr(stack_mod, "register", refuse)
    assert stack.up(timeout_s=5) == ["kafka", "minio", "registry"]
    assert any(line.startswith("WARNING: registry: schemas not registered") for line in said)
    assert any("stack reset" in line for line in said)


def test_up_fails_when_the_registry_does_not_answer_registration(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deploy.local import stack as stack_mod
    from schemas.registry_client import RegistryUnavailableError

    def unreachable(settings: Settings, progress: object = None) -> None:
        raise RegistryUnavailableError("registry at http://127.0.0.1:1 did not answer")

    monkeypatch.setattr(stack_mod, "register", unreachable)
    with pytest.raises(StackError, match="did not answer"):
        LocalStack(settings, progress=lambda _: None).ensure_schemas()
