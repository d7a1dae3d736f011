"""The local schema registry without starting it: finding a Java 21+, its configuration, its command
line, the one-time install (with a stand-in `mvn`), and its health probe (a stand-in server)."""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from deploy.local import registry as registry_mod
from deploy.local.registry import (
    RegistryService,
    find_jdk,
    registry_address,
    system_properties,
)
from deploy.local.service import StackError
from deploy.local.session import free_port
from processors.config import KafkaSettings, RegistrySettings, Settings


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.delenv("LIGHTBOX_CONFIG", raising=False)
    return Settings(
        home=tmp_path / "home",
        kafka=KafkaSettings(bootstrap="127.0.0.1:29092"),
        registry=RegistrySettings(
            url=f"http://127.0.0.1:{free_port()}/apis/ccompat/v7", management_port=free_port()
        ),
    )


# --- finding a JDK -----------------------------------------------------------------------------


def make_jdk(root: Path, name: str, version: str | None, runs_as: str | None = None) -> Path:
    """A fake JDK home: a `release` file (unless version is None) and an executable bin/java
    that prints `runs_as` the way `java -version` does (on stderr)."""
    home = root / name
    (home / "bin").mkdir(parents=True)
    if version is not None:
        (home / "release").write_text(f'IMPLEMENTOR="Test"\nJAVA_VERSION="{version}"\n')
    java = home / "bin" / "java"
    java.write_text(f"#!/bin/sh\necho 'openjdk version \"{runs_as or version}\" 2025-01-01' >&2\n")
    java.chmod(0o755)
    return home


@pytest.fixture
def jvm_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "jvm"
    root.mkdir()
    monkeypatch.setattr(registry_mod, "JVM_ROOTS", (root,))
    return root


def no_path_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    empty = tmp_path / "empty-bin"
    empty.mkdir(exist_ok=True)
    return {"PATH": str(empty), **extra}


def test_the_newest_jdk_under_the_jvm_folder_is_found(jvm_root: Path, tmp_path: Path) -> None:
    make_jdk(jvm_root, "java-17-openjdk-amd64", "17.0.15")
    make_jdk(jvm_root, "temurin-21-jdk-amd64", "21.0.7")
    newest = make_jdk(jvm_root, "temurin-25-jdk-amd64", "25.0.3")
    jdk = find_jdk(RegistrySettings(), env=no_path_env(tmp_path))
    assert (jdk.java, jdk.major) == (newest / "bin" / "java", 25)


def test_a_java_home_of_java_17_is_passed_over_not_fatal(jvm_root: Path, tmp_path: Path) -> None:
    old = make_jdk(jvm_root, "java-17-openjdk-amd64", "17.0.15")
    good = make_jdk(jvm_root, "temurin-21-jdk-amd64", "21.0.7")
    jdk = find_jdk(RegistrySettings(), env=no_path_env(tmp_path, JAVA_HOME=str(old)))
    assert jdk.java == good / "bin" / "java"


def test_java_home_wins_over_the_folder_scan(jvm_root: Path, tmp_path: Path) -> None:
    make_jdk(jvm_root, "temurin-25-jdk-amd64", "25.0.3")
    mine = make_jdk(tmp_path / "opt", "jdk-21", "21.0.2")
    jdk = find_jdk(RegistrySettings(), env=no_path_env(tmp_path, JAVA_HOME=str(mine)))
    assert (jdk.java, jdk.found_by) == (mine / "bin" / "java", "JAVA_HOME")


def test_the_setting_wins_and_may_name_the_binary(jvm_root: Path, tmp_path: Path) -> None:
    make_jdk(jvm_root, "temurin-25-jdk-amd64", "25.0.3")
    mine = make_jdk(tmp_path / "opt", "jdk-22", "22.0.1")
    for value in (str(mine), str(mine / "bin" / "java")):
        jdk = find_jdk(RegistrySettings(java_home=value), env=no_path_env(tmp_path))
        assert (jdk.java, jdk.major, jdk.found_by) == (mine / "bin" / "java", 22, "registry.java_home")


def test_a_setting_naming_an_old_java_is_an_error_not_skipped(jvm_root: Path, tmp_path: Path) -> None:
    make_jdk(jvm_root, "temurin-25-jdk-amd64", "25.0.3")
    old = make_jdk(tmp_path / "opt", "jdk-17", "17.0.1")
    with pytest.raises(StackError, match=r"is Java 17; Apicurio Registry needs Java 21\+"):
        find_jdk(RegistrySettings(java_home=str(old)), env=no_path_env(tmp_path))
    with pytest.raises(StackError, match="no runnable"):
        find_jdk(RegistrySettings(java_home=str(tmp_path / "nowhere")), env=no_path_env(tmp_path))


def test_a_jdk_without_release_file_is_asked_for_its_version(jvm_root: Path, tmp_path: Path) -> None:
    home = make_jdk(jvm_root, "custom", None, runs_as="23.0.1")
    assert find_jdk(RegistrySettings(), env=no_path_env(tmp_path)).java == home / "bin" / "java"


def test_no_java_21_says_what_was_found_and_what_to_install(jvm_root: Path, tmp_path: Path) -> None:
    make_jdk(jvm_root, "java-17-openjdk-amd64", "17.0.15")
    with pytest.raises(StackError) as info:
        find_jdk(RegistrySettings(), env=no_path_env(tmp_path))
    message = str(info.value)
    assert "needs Java 21 or newer" in message
    assert "java-17-openjdk-amd64/bin/java" in message and "Java 17" in message
    assert "temurin-21-jdk" in message and "openjdk-21-jre-headless" in message
    assert "LIGHTBOX_REGISTRY__JAVA_HOME" in message


def test_no_java_at_all_is_said_so(jvm_root: Path, tmp_path: Path) -> None:
    with pytest.raises(StackError, match="found no Java at all"):
        find_jdk(RegistrySettings(), env=no_path_env(tmp_path))


# --- configuration and command line --------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("http://10.0.0.5:18081/apis/ccompat/v7", "loopback"),
        ("http://registry:8080/apis/ccompat/v7", "loopback"),
        ("https://127.0.0.1:18081/apis/ccompat/v7", "plain http"),
        ("http://127.0.0.1/apis/ccompat/v7", "explicit port"),
        ("http://127.0.0.1:18081", "/apis/ccompat/v7"),
    ],
)
def test_registry_urls_the_local_stack_cannot_serve(url: str, match: str) -> None:
    with pytest.raises(StackError, match=match):
        registry_address(RegistrySettings(url=url))


def test_system_properties_put_storage_in_kafka_and_bind_loopback(settings: Settings) -> None:
    data = settings.data_dir / "registry"
    props = system_properties(settings, data)
    port = registry_address(settings.registry)[0]
    assert props["apicurio.storage.kind"] == "kafkasql"
    assert props["apicurio.kafkasql.bootstrap.servers"] == "127.0.0.1:29092"
    assert props["apicurio.kafkasql.topic"] == settings.registry.journal_topic
    assert props["apicurio.kafkasql.snapshots.topic"] == settings.registry.snapshots_topic
    assert (props["quarkus.http.host"], props["quarkus.http.port"]) == ("127.0.0.1", str(port))
    assert props["quarkus.management.host"] == "127.0.0.1"
    assert props["quarkus.management.port"] == str(settings.registry.management_port)
    # Nothing of this stack's lands in the machine-wide /tmp.
    assert Path(props["apicurio.storage.snapshot.location"]).is_relative_to(data)
    assert Path(props["apicurio.import.work-dir"]).is_relative_to(data)


def test_management_port_must_differ(settings: Settings) -> None:
    settings.registry.management_port = registry_address(settings.registry)[0]
    with pytest.raises(StackError, match="management_port"):
        system_properties(settings, Path("/x"))


def test_command_line_runs_the_cached_jar_with_the_found_jdk(settings: Settings, tmp_path: Path) -> None:
    service = RegistryService(settings, print)
    jdk_home = make_jdk(tmp_path / "opt", "jdk-25", "25.0.3")
    service._jdk = registry_mod.Jdk(jdk_home / "bin" / "java", 25, "test")
    argv = service.command()
    assert argv[0] == str(jdk_home / "bin" / "java")
    jar = settings.cache_dir / "apicurio-registry-3.3.3" / "app" / "quarkus-run.jar"
    assert argv[-2:] == ["-jar", str(jar)]
    assert "-Dapicurio.storage.kind=kafkasql" in argv
    assert service.marker in " ".join(argv)  # how `down` tells our process from a recycled pid
    assert service.env()["JAVA_HOME"] == str(jdk_home)


def test_the_version_setting_chooses_the_cache_dir(settings: Settings) -> None:
    settings.registry.version = "3.2.0"
    service = RegistryService(settings, print)
    assert service.home == settings.cache_dir / "apicurio-registry-3.2.0"
    assert service.address == settings.registry.url.split("/")[2]


# --- install, with a stand-in mvn --------------------------------------------------------------

_FAKE_MVN = """#!{python}
import os, sys, tarfile
args = sys.argv[1:]
with open(os.environ["FAKE_MVN_LOG"], "a") as log:
    log.write(" ".join(args) + "\\n")
out = next(a.split("=", 1)[1] for a in args if a.startswith("-DoutputDirectory="))
os.makedirs(out, exist_ok=True)
with tarfile.open(os.path.join(out, "apicurio-registry-app-3.3.3-all.tar.gz"), "w:gz") as tar:
    for name in os.listdir(os.environ["FAKE_ARCHIVE"]):
        tar.add(os.path.join(os.environ["FAKE_ARCHIVE"], name), arcname=name)
    if os.environ.get("FAKE_EVIL"):
        tar.add(os.path.join(os.environ["FAKE_ARCHIVE"], "quarkus-run.jar"), arcname="../../outside.txt")
"""


@pytest.fixture
def fake_mvn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    mvn = bin_dir / "mvn"
    mvn.write_text(_FAKE_MVN.format(python=sys.executable))
    mvn.chmod(0o755)
    archive = tmp_path / "archive"
    (archive / "lib").mkdir(parents=True)
    (archive / "quarkus-run.jar").write_bytes(b"PK")
    (archive / "lib" / "x.jar").write_bytes(b"PK")
    log = tmp_path / "mvn.log"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_ARCHIVE", str(archive))
    monkeypatch.setenv("FAKE_MVN_LOG", str(log))
    return log


def test_install_resolves_the_pinned_archive_and_unpacks_it(settings: Settings, fake_mvn: Path) -> None:
    service = RegistryService(settings, lambda _: None)
    assert not service.installed()
    service.install()
    assert service.installed()
    assert (service.app_dir / "lib" / "x.jar").is_file()
    args = fake_mvn.read_text()
    assert "maven-dependency-plugin:3.8.1:copy" in args
    assert "-Dartifact=io.apicurio:apicurio-registry-app:3.3.3:tar.gz:all" in args
    assert not (service.home / "download.partial").exists()  # the 160 MB archive is not kept
    service.install()  # cached: Maven is not asked again
    assert len(fake_mvn.read_text().splitlines()) == 1


def test_an_archive_without_the_runner_never_looks_installed(
    settings: Settings, fake_mvn: Path, tmp_path: Path
) -> None:
    (tmp_path / "archive" / "quarkus-run.jar").unlink()
    service = RegistryService(settings, lambda _: None)
    with pytest.raises(StackError, match=r"no quarkus-run\.jar"):
        service.install()
    assert not service.installed()


def test_an_archive_escaping_its_folder_is_refused(
    settings: Settings, fake_mvn: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_EVIL", "1")
    service = RegistryService(settings, lambda _: None)
    with pytest.raises(StackError, match="could not unpack"):
        service.install()
    assert not service.installed()
    assert not (settings.cache_dir / "outside.txt").exists()


# --- health, against a stand-in server ---------------------------------------------------------


class _Answers(BaseHTTPRequestHandler):
    status = "UP"

    def do_GET(self) -> None:
        if self.path == "/health/ready":
            body = json.dumps({"status": type(self).status}).encode()
            self.send_response(200 if type(self).status == "UP" else 503)
        elif self.path == "/apis/ccompat/v7/config":
            body = b'{"compatibilityLevel":"NONE"}'
            self.send_response(200)
        else:
            body = b""
            self.send_response(404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def stand_in(settings: Settings) -> Iterator[type[_Answers]]:
    handler = type("Answers", (_Answers,), {"status": "UP"})
    servers = [
        ThreadingHTTPServer(("127.0.0.1", registry_address(settings.registry)[0]), handler),
        ThreadingHTTPServer(("127.0.0.1", settings.registry.management_port), handler),
    ]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield handler
    for server in servers:
        server.shutdown()
        server.server_close()


def test_healthy_needs_ready_storage_and_the_compatible_api(
    settings: Settings, stand_in: type[_Answers]
) -> None:
    service = RegistryService(settings, print)
    assert service.healthy()
    stand_in.status = "DOWN"  # e.g. still replaying its journal from Kafka
    assert not service.healthy()


def test_nothing_listening_is_not_healthy(settings: Settings) -> None:
    assert not RegistryService(settings, print).healthy()
