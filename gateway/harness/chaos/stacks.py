"""The Kafka and MinIO a chaos run breaks, and the few ways it breaks them.

By default a run brings up a private local stack: its own LIGHTBOX_HOME (a temporary folder whose
cache/ links to the configured one, so nothing is installed again), its own ports, its own
embedded ClickHouse. Killing that broker or freezing that MinIO disturbs nobody else on the
machine. `shared=True` runs against the configured stack instead (under a topic prefix of its
own, with its own event-log engine); a broker kill or a MinIO stop is then felt by every other
user, and the broker can only be killed if this LIGHTBOX_HOME's stack started it.

Every fault goes through the local stack's own services (deploy/local): the pid it recorded, and
its start() and wait_ready(), the same code `lightbox stack up` runs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deploy.local.service import ManagedService, StackError, pid_alive
from deploy.local.session import free_port
from deploy.local.stack import LocalStack
from processors.config import Settings

READY_TIMEOUT_S = 120.0


def private_settings(base: Settings, home: Path) -> Settings:
    """Settings for a stack of its own under `home`, every port fresh, the tool cache shared."""
    home.mkdir(parents=True, exist_ok=True)
    cache = home / "cache"
    if not cache.exists():
        cache.symlink_to(base.cache_dir)
    update: dict[str, Any] = {
        "home": home,
        "kafka": base.kafka.model_copy(
            update={"bootstrap": f"127.0.0.1:{free_port()}", "controller_port": free_port()}
        ),
        "storage": base.storage.model_copy(
            update={"endpoint": f"127.0.0.1:{free_port()}", "console_port": free_port()}
        ),
        "clickhouse": base.clickhouse.model_copy(
            update={"url": "", "embedded_path": str(home / "data" / "clickhouse"), "query_port": free_port()}
        ),
    }
    registry = getattr(base, "registry", None)  # the schema registry, where the stack runs one
    if registry is not None:
        update["registry"] = registry.model_copy(
            update={"url": f"http://127.0.0.1:{free_port()}/apis/ccompat/v7", "management_port": free_port()}
        )
    return base.model_copy(update=update)


def stage_env(settings: Settings) -> dict[str, str]:
    """What a stage process needs to find this stack: everything that differs per stack."""
    env = {
        "LIGHTBOX_HOME": str(settings.home),
        "LIGHTBOX_KAFKA__BOOTSTRAP": settings.kafka.bootstrap,
        "LIGHTBOX_STORAGE__ENDPOINT": settings.storage.endpoint,
        "LIGHTBOX_CLICKHOUSE__URL": settings.clickhouse.url,
        "LIGHTBOX_CLICKHOUSE__EMBEDDED_PATH": settings.clickhouse.embedded_path,
        "LIGHTBOX_CLICKHOUSE__QUERY_PORT": str(settings.clickhouse.query_port),
    }
    registry = getattr(settings, "registry", None)
    if registry is not None:
        env["LIGHTBOX_REGISTRY__URL"] = registry.url
    return env


class ChaosStack:
    """The stack a run uses, and the faults it can suffer."""

    def __init__(self, base: Settings, shared: bool, progress: Callable[[str], None]) -> None:
        self.shared = shared
        self.progress = progress
        # Scratch space for the run: the private stack's home, or the shared run's event-log engine.
        self._scratch = Path(tempfile.mkdtemp(prefix="lightbox-chaos-"))
        try:
            self.settings = (
                self._shared_settings(base) if shared else private_settings(base, self._scratch / "home")
            )
        except BaseException:
            shutil.rmtree(self._scratch, ignore_errors=True)
            raise
        self.stack = LocalStack(self.settings, progress=lambda line: progress(f"  stack: {line}"))
        self._frozen = False

    def _shared_settings(self, base: Settings) -> Settings:
        clickhouse = base.clickhouse
        if not clickhouse.url:  # an engine of its own: the shared one belongs to `run all`
            clickhouse = clickhouse.model_copy(
                update={"embedded_path": str(self._scratch / "clickhouse"), "query_port": free_port()}
            )
        return base.model_copy(update={"clickhouse": clickhouse})

    @property
    def where(self) -> str:
        return (
            "the configured (shared) stack" if self.shared else f"a private stack under {self.settings.home}"
        )

    def up(self) -> None:
        self.stack.up(timeout_s=READY_TIMEOUT_S)

    def close(self, keep: bool = False) -> None:
        """Stop a private stack and delete its data (unless `keep`); a shared one is left up."""
        try:
            self.recover()
        except StackError as exc:  # cleaning up after a failure must not hide that failure
            self.progress(f"could not bring the stack back: {exc}")
        if not self.shared:
            with contextlib.suppress(StackError):
                self.stack.down()
        if not keep:
            shutil.rmtree(self._scratch, ignore_errors=True)

    # -- the faults ----------------------------------------------------------------------------

    def kill_broker(self) -> bool:
        """SIGKILL the broker; False when this stack did not start it (nothing to kill)."""
        return self._kill(self.stack.kafka)

    def start_broker(self) -> float:
        return self._start(self.stack.kafka)

    def stop_storage(self) -> bool:
        """A full stop (SIGTERM, the service's own grace): False when this stack did not start it."""
        if self.stack.minio.pid() is None:
            return False
        self.stack.minio.stop()
        return True

    def start_storage(self) -> float:
        return self._start(self.stack.minio)

    def freeze_storage(self) -> bool:
        pid = self.stack.minio.pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGSTOP)
        self._frozen = True
        return True

    def thaw_storage(self) -> None:
        pid = self.stack.minio.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        self._frozen = False

    def recover(self) -> None:
        """Whatever a fault left down or frozen comes back (also after an interrupted run)."""
        if self._frozen:
            self.thaw_storage()
        for service in (self.stack.kafka, self.stack.minio):
            if not service.running_already():
                self._start(service)

    def _kill(self, service: ManagedService) -> bool:
        pid = service.pid()
        if pid is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        return True

    def _start(self, service: ManagedService) -> float:
        """Start the service through the local stack and wait until it answers; seconds taken."""
        started = time.monotonic()
        since = service.start()
        service.wait_ready(time.monotonic() + READY_TIMEOUT_S, since)
        return time.monotonic() - started
