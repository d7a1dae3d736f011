"""Apicurio Registry 3.x on loopback, its storage in the stack's own Kafka (KafkaSQL).

The runnable archive (`io.apicurio:apicurio-registry-app:<version>:tar.gz:all`, a Quarkus fast-jar,
about 160 MB) is resolved from Maven Central once, like Kafka's jars, and unpacked into the cache.
It needs Java 21+, which is rarely the default `java` (Debian 12 ships 17), so the JDK is looked
for explicitly: the registry.java_home setting, JAVA_HOME, then every JVM under /usr/lib/jvm.

With KafkaSQL storage the registry keeps nothing of its own on disk: every change is a message in
its journal topic, replayed on start, so schemas and ids survive restarts and `stack reset`
(which deletes Kafka's data) is the one thing that forgets them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from deploy.local.kafka import java_major_version
from deploy.local.service import (
    LOOPBACK,
    ManagedService,
    Progress,
    StackError,
    parse_loopback,
    require_tool,
    run_logged,
)
from processors.config import RegistrySettings, Settings
from schemas.registry_client import CCOMPAT_PATH

MIN_JAVA = 21
GROUP, ARTIFACT = "io.apicurio", "apicurio-registry-app"
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
JVM_ROOTS = (Path("/usr/lib/jvm"),)
HEAP = ["-Xms128m", "-Xmx512m"]
JVM_FLAGS = ["-XX:+UseSerialGC", "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true"]
# Loopback never goes through an HTTP(S)_PROXY from the environment.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))

INSTALL_HINT = (
    "Install one: Debian 13 / Ubuntu 24.04: `sudo apt-get install openjdk-21-jre-headless`; "
    "Debian 12 has no Java 21 package: install Temurin 21+ from Adoptium "
    "(https://adoptium.net/installation/linux, package temurin-21-jdk) or unpack a JDK anywhere "
    "and set LIGHTBOX_REGISTRY__JAVA_HOME to it."
)


# --- finding a JDK ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Jdk:
    java: Path
    major: int
    found_by: str  # which rule found it, for messages


def _release_major(home: Path) -> int | None:
    """The major version from a JDK's `release` file (JAVA_VERSION="25.0.3"), no JVM started."""
    try:
        text = (home / "release").read_text()
    except OSError:
        return None
    match = re.search(r'^JAVA_VERSION="([^"]+)"', text, re.MULTILINE)
    return java_major_version(f'version "{match.group(1)}"') if match else None


def java_version_of(java: Path) -> int | None:
    """The major version of a java binary: its JDK's release file, else `java -version`."""
    major = _release_major(java.resolve().parent.parent)
    if major is not None:
        return major
    try:
        out = subprocess.run([str(java), "-version"], capture_output=True, text=True, timeout=60, check=False)
    except OSError:
        return None
    return java_major_version(out.stderr + out.stdout)


def _java_in(location: str | Path) -> Path:
    """A java binary from a JDK home or from a path to the binary itself."""
    path = Path(location).expanduser()
    return path if path.is_file() else path / "bin" / "java"


def find_jdk(settings: RegistrySettings, env: dict[str, str] | None = None) -> Jdk:
    """A Java 21+: the setting (which must be one), else JAVA_HOME, else the newest under the
    JVM folders, else `java` on PATH. StackError saying what to install when there is none."""
    env = dict(os.environ) if env is None else env
    if settings.java_home:
        java = _java_in(settings.java_home)
        major = java_version_of(java) if os.access(java, os.X_OK) else None
        if major is None:
            raise StackError(f"registry: registry.java_home={settings.java_home!r} has no runnable {java}")
        if major < MIN_JAVA:
            raise StackError(
                f"registry: registry.java_home={settings.java_home!r} is Java {major}; "
                f"Apicurio Registry needs Java {MIN_JAVA}+. {INSTALL_HINT}"
            )
        return Jdk(java, major, "registry.java_home")
    # (java, which rule found it, its major version)
    candidates: list[tuple[Path, str, int | None]] = []
    if env.get("JAVA_HOME"):
        java = _java_in(env["JAVA_HOME"])
        candidates.append((java, "JAVA_HOME", java_version_of(java) if os.access(java, os.X_OK) else None))
    scanned = []
    for root in JVM_ROOTS:
        for home in sorted(root.glob("*")) if root.is_dir() else []:
            java = home / "bin" / "java"
            if os.access(java, os.X_OK):
                scanned.append((java, str(root), java_version_of(java)))
    # The newest first. The folder holds aliases of one JDK (java-17-openjdk-amd64 beside
    # java-1.17.0-openjdk-amd64); which alias wins does not matter.
    candidates += sorted(scanned, key=lambda c: -(c[2] or 0))
    on_path = shutil.which("java", path=env.get("PATH"))
    if on_path:
        candidates.append((Path(on_path), "PATH", java_version_of(Path(on_path))))
    seen = []
    for java, found_by, major in candidates:
        if major is not None and major >= MIN_JAVA:
            return Jdk(java, major, found_by)
        seen.append(f"{java} ({found_by}: {f'Java {major}' if major is not None else 'not runnable'})")
    found = "; found only " + ", ".join(dict.fromkeys(seen)) if seen else "; found no Java at all"
    raise StackError(f"registry: Apicurio Registry needs Java {MIN_JAVA} or newer{found}. {INSTALL_HINT}")


# --- the service -----------------------------------------------------------------------------


def registry_address(settings: RegistrySettings) -> tuple[int, str]:
    """(port, path) of registry.url, insisting on loopback and on Apicurio's compatible API."""
    parts = urlsplit(settings.url)
    if parts.scheme != "http" or parts.port is None or parts.hostname is None:
        raise StackError(
            f"registry.url={settings.url!r}: the local registry serves plain http on an explicit "
            f"port, e.g. http://127.0.0.1:18081{CCOMPAT_PATH}"
        )
    port = parse_loopback(f"{parts.hostname}:{parts.port}", "registry.url")
    if parts.path.rstrip("/") != CCOMPAT_PATH:
        raise StackError(
            f"registry.url={settings.url!r}: Apicurio serves the Confluent-compatible API under "
            f"{CCOMPAT_PATH}; use http://127.0.0.1:{port}{CCOMPAT_PATH}"
        )
    return port, parts.path.rstrip("/")


def system_properties(settings: Settings, data_dir: Path) -> dict[str, str]:
    """Apicurio's and Quarkus's runtime configuration, as -D flags (they beat the packaged
    application.properties)."""
    registry = settings.registry
    port, _ = registry_address(registry)
    if registry.management_port == port:
        raise StackError(f"registry.management_port ({port}) must differ from the port of registry.url")
    return {
        "quarkus.http.host": LOOPBACK,
        "quarkus.http.port": str(port),
        "quarkus.management.host": LOOPBACK,
        "quarkus.management.port": str(registry.management_port),
        "apicurio.storage.kind": "kafkasql",
        "apicurio.kafkasql.bootstrap.servers": settings.kafka.bootstrap,
        "apicurio.kafkasql.topic": registry.journal_topic,
        "apicurio.kafkasql.snapshots.topic": registry.snapshots_topic,
        # Its defaults are /tmp, shared by every stack on the machine.
        "apicurio.storage.snapshot.location": str(data_dir / "snapshots"),
        "apicurio.import.work-dir": str(data_dir / "import"),
        # `lightbox schemas unregister` (test sessions, benchmarks) deletes its subjects.
        "apicurio.rest.deletion.artifact.enabled": "true",
        "apicurio.rest.deletion.artifact-version.enabled": "true",
        # One log line per request, and the Kafka clients' INFO chatter, drown what matters.
        "quarkus.http.access-log.enabled": "false",
        'quarkus.log.category."org.apache.kafka".level': "WARN",
        "quarkus.log.console.format": "%d{yyyy-MM-dd HH:mm:ss} %p [%c{2.}] (%t) %m%n",
    }


class RegistryService(ManagedService):
    name = "registry"
    grace_s = 20.0

    def __init__(self, settings: Settings, progress: Progress) -> None:
        super().__init__(settings, progress)
        self.version = settings.registry.version
        self._jdk: Jdk | None = None

    @property
    def port(self) -> int:
        return registry_address(self.settings.registry)[0]

    @property
    def home(self) -> Path:
        return self.settings.cache_dir / f"apicurio-registry-{self.version}"

    @property
    def app_dir(self) -> Path:
        return self.home / "app"

    @property
    def runner_jar(self) -> Path:
        return self.app_dir / "quarkus-run.jar"

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir / "registry"

    @property
    def ports(self) -> dict[int, str]:
        return {self.port: "registry.url", self.settings.registry.management_port: "registry.management_port"}

    @property
    def marker(self) -> str:
        return str(self.data_dir)

    # Install: resolve the archive once, unpack it.

    def installed(self) -> bool:
        return self.complete_marker.is_file() and self.runner_jar.is_file()

    def install(self) -> None:
        if self.installed():
            return
        mvn = require_tool("mvn", "maven", "to fetch Apicurio Registry from Maven Central")
        coordinates = f"{GROUP}:{ARTIFACT}:{self.version}:tar.gz:all"
        self.progress(
            f"registry: resolving {coordinates} (about 160 MB) from Maven Central into {self.home} "
            "(first run only)…"
        )
        self.home.mkdir(parents=True, exist_ok=True)
        download = self.home / "download.partial"
        shutil.rmtree(download, ignore_errors=True)
        run_logged(
            [
                mvn,
                "-q",
                "-B",
                f"{DEPENDENCY_PLUGIN}:copy",
                f"-Dartifact={coordinates}",
                f"-DoutputDirectory={download}",
            ],
            self.install_log,
            "resolving the registry archive with Maven",
            self.name,
            self.progress,
            cwd=self.home,
            timeout_s=1800,
        )
        archives = list(download.glob("*.tar.gz"))
        if len(archives) != 1:
            raise StackError(f"registry: Maven left {len(archives)} archives in {download}, expected one")
        # Unpacked beside the final place and renamed, so an interrupted run never looks installed.
        staging = self.home / "app.partial"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            with tarfile.open(archives[0]) as archive:
                # The data filter refuses members that would land outside staging, links out
                # of it, and device files.
                archive.extractall(staging, filter="data")
        except (tarfile.TarError, OSError) as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise StackError(f"registry: could not unpack {archives[0]}: {exc}") from exc
        if not (staging / "quarkus-run.jar").is_file():
            raise StackError(f"registry: {archives[0].name} has no quarkus-run.jar at its top level")
        shutil.rmtree(self.app_dir, ignore_errors=True)
        staging.rename(self.app_dir)
        shutil.rmtree(download, ignore_errors=True)  # Maven's local repository keeps a copy
        self.complete_marker.write_text(self.version + "\n")
        self.progress(f"registry: Apicurio Registry {self.version} cached in {self.app_dir}")

    # Prepare and run.

    def jdk(self) -> Jdk:
        if self._jdk is None:
            self._jdk = find_jdk(self.settings.registry)
        return self._jdk

    def preflight(self) -> None:
        super().preflight()
        if not self.running_already():
            self.jdk()  # no Java 21 is said before anything is installed or started

    def prepare(self) -> None:
        registry_address(self.settings.registry)
        jdk = self.jdk()
        self.progress(f"registry: using Java {jdk.major} at {jdk.java} (found by {jdk.found_by})")
        for sub in ("snapshots", "import"):
            (self.data_dir / sub).mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        props = system_properties(self.settings, self.data_dir)
        return [
            str(self.jdk().java),
            *HEAP,
            *JVM_FLAGS,
            *(f"-D{key}={value}" for key, value in props.items()),
            "-jar",
            str(self.runner_jar),
        ]

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        # A JAVA_HOME of another JDK, or JAVA_TOOL_OPTIONS meant for Kafka, must not leak in.
        env["JAVA_HOME"] = str(self.jdk().java.resolve().parent.parent)
        env.pop("JAVA_TOOL_OPTIONS", None)
        return env

    def healthy(self, timeout_s: float = 2.0) -> bool:
        """Ready (storage caught up with its journal) and answering the compatible API."""
        ready = f"http://{LOOPBACK}:{self.settings.registry.management_port}/health/ready"
        api = f"http://{self.address}{CCOMPAT_PATH}/config"
        try:
            with _DIRECT.open(ready, timeout=timeout_s) as response:
                if response.status != 200 or json.load(response).get("status") != "UP":
                    return False
            with _DIRECT.open(api, timeout=timeout_s) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError, ValueError):
            return False
