"""A single-drive MinIO server on loopback, built once from source with the Go toolchain.

MinIO publishes no community binaries any more (source only since late 2025), so the stack builds
the server with `go install` at a pinned version and keeps the binary in the cache.
"""

from __future__ import annotations

import os
import re
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from deploy.local.service import (
    LOOPBACK,
    ManagedService,
    Progress,
    StackError,
    parse_loopback,
    require_tool,
    run_logged,
)
from processors.config import Settings

MODULE = "github.com/minio/minio"
# MinIO's go.mod asks for a recent Go; from 1.21 on, `go` can fetch a newer toolchain itself
# (GOTOOLCHAIN=auto), so older ones are the only dead end.
MIN_GO = (1, 21)
# Loopback never goes through an HTTP(S)_PROXY from the environment.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def go_version(version_output: str) -> tuple[int, int] | None:
    """(major, minor) from `go version` output, e.g. "go version go1.26.8 linux/amd64"."""
    match = re.search(r"\bgo(\d+)\.(\d+)", version_output)
    return (int(match.group(1)), int(match.group(2))) if match else None


def check_credentials(access_key: str, secret_key: str) -> None:
    # MinIO refuses to start with shorter ones and only says so in its log.
    if len(access_key) < 3:
        raise StackError("storage.access_key must be at least 3 characters for MinIO")
    if len(secret_key) < 8:
        raise StackError("storage.secret_key must be at least 8 characters for MinIO")


class MinioService(ManagedService):
    name = "minio"
    grace_s = 15.0

    def __init__(self, settings: Settings, progress: Progress) -> None:
        super().__init__(settings, progress)
        self.version = settings.storage.minio_version

    @property
    def port(self) -> int:
        # Checked when used, not at construction: the bucket step also serves non-local MinIO.
        return parse_loopback(self.settings.storage.endpoint, "storage.endpoint")

    @property
    def home(self) -> Path:
        return self.settings.cache_dir / f"minio-{self.version}"

    @property
    def binary(self) -> Path:
        return self.home / "bin" / "minio"

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir / "minio"

    @property
    def console_address(self) -> str:
        return f"{LOOPBACK}:{self.settings.storage.console_port}"

    @property
    def ports(self) -> dict[int, str]:
        return {self.port: "storage.endpoint", self.settings.storage.console_port: "storage.console_port"}

    @property
    def marker(self) -> str:
        return str(self.data_dir)

    def installed(self) -> bool:
        return self.binary.is_file() and os.access(self.binary, os.X_OK)

    def install(self) -> None:
        if self.installed():
            return
        go = require_tool("go", "golang", "to build the MinIO server from source")
        out = subprocess.run([go, "version"], capture_output=True, text=True, check=False)
        found = go_version(out.stdout)
        if found is not None and found < MIN_GO:
            raise StackError(
                f"minio: {go} is Go {found[0]}.{found[1]}; building MinIO needs Go "
                f"{MIN_GO[0]}.{MIN_GO[1]}+ (Debian: golang from bookworm-backports, or go.dev/dl)"
            )
        self.progress(
            f"minio: building MinIO {self.version} with go install (first run only, several "
            f"minutes); log: {self.install_log}…"
        )
        # go install writes the binary only once it has linked, so a killed build never leaves
        # a half-written one behind for installed() to trust.
        env = {**os.environ, "GOBIN": str(self.binary.parent)}
        # A module path with @version builds in module mode from the proxy. MinIO's RELEASE.*
        # tags are not semver, so the proxy refuses them; the pin is a pseudo-version of a commit.
        run_logged(
            [go, "install", f"{MODULE}@{self.version}"],
            self.install_log,
            "building MinIO",
            self.name,
            self.progress,
            env=env,
            timeout_s=3600,
        )
        if not self.installed():
            raise StackError(f"minio: go install succeeded but {self.binary} is missing")
        self.progress(f"minio: built {self.binary}")

    def prepare(self) -> None:
        storage = self.settings.storage
        check_credentials(storage.access_key, storage.secret_key)
        if storage.secure:
            raise StackError(
                "storage.secure is true, but the local MinIO serves plain HTTP on loopback; "
                "set LIGHTBOX_STORAGE__SECURE=false"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        return [
            str(self.binary),
            "server",
            str(self.data_dir),
            "--address",
            self.address,
            "--console-address",
            self.console_address,
        ]

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "MINIO_ROOT_USER": self.settings.storage.access_key,
            "MINIO_ROOT_PASSWORD": self.settings.storage.secret_key,
            # No internet from here, and a dev server should not phone home anyway.
            "MINIO_UPDATE": "off",
            "MINIO_BROWSER_LOGIN_ANIMATION": "off",
            "MINIO_SCANNER_SPEED": self.settings.storage.minio_scanner_speed,
        }

    def healthy(self, timeout_s: float = 2.0) -> bool:
        url = f"http://{self.address}/minio/health/live"
        try:
            with _DIRECT.open(url, timeout=timeout_s) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError, ValueError):
            return False
