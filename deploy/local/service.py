"""What the local stack's services share: errors, status, detached processes, pid files, logs.

A service here is a long-lived local process (Kafka, MinIO) that must outlive the CLI that started
it, be found again by the next CLI call, and explain itself when it fails. Subclasses say how to
install, prepare, run and probe one; this module does the process bookkeeping once for both.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from processors.config import Settings

TAIL_LINES = 30
LOOPBACK = "127.0.0.1"
# Accepted in settings; the stack always binds and advertises 127.0.0.1 itself.
_LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost"})

Progress = Callable[[str], None]


class StackError(RuntimeError):
    """A local service could not be installed, started or reached; the message says which and why."""


@dataclass
class ServiceStatus:
    name: str
    running: bool
    pid: int | None
    address: str
    log_file: Path
    data_dir: Path
    detail: str = ""


# --- small helpers ---------------------------------------------------------------------------


def tail(path: Path, lines: int = TAIL_LINES, since: int = 0) -> str:
    """The last `lines` lines of a log, read from byte offset `since` (the start of this run)."""
    try:
        with path.open("rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            # Logs can be large; the last 256 KiB always hold 30 lines of Kafka or MinIO output.
            fh.seek(max(since, size - 256 * 1024))
            data = fh.read()
    except FileNotFoundError:
        return f"(no log at {path})"
    text = data.decode("utf-8", errors="replace").splitlines()[-lines:]
    return "\n".join(text) if text else f"(log {path} is empty)"


def failure(service: str, reason: str, log_file: Path, since: int = 0) -> StackError:
    return StackError(
        f"{service}: {reason}\n--- last {TAIL_LINES} lines of {log_file} ---\n{tail(log_file, since=since)}"
    )


def require_tool(tool: str, package: str, purpose: str) -> str:
    """The tool's path, or a StackError that says how to install it."""
    found = shutil.which(tool)
    if found is None:
        raise StackError(
            f"`{tool}` was not found on PATH; the local stack needs it {purpose}. "
            f"Install it (Debian/Ubuntu: `sudo apt-get install {package}`) or use docker compose."
        )
    return found


def parse_loopback(address: str, setting: str) -> int:
    """The port of a host:port setting, insisting the host is loopback (the stack never listens
    on other interfaces, so a non-loopback address here would be a silent misconfiguration)."""
    first = address.split(",")[0].strip()
    host, sep, port = first.rpartition(":")
    if not sep or not port.isdigit():
        raise StackError(f"{setting}={address!r}: expected host:port, e.g. 127.0.0.1:19092")
    if host not in _LOOPBACK_NAMES:
        raise StackError(
            f"{setting}={address!r}: the local stack only listens on loopback; "
            f"use 127.0.0.1:{port} (or point the setting at your own server and skip the stack)"
        )
    value = int(port)
    if not 0 < value < 65536:
        raise StackError(f"{setting}={address!r}: port out of range")
    return value


def port_open(port: int, host: str = LOOPBACK, timeout_s: float = 0.5) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        return sock.connect_ex((host, port)) == 0


# --- processes -------------------------------------------------------------------------------

# Runs in a throwaway interpreter that starts the service and exits at once, so the service is
# re-parented away from us: no zombie in a long-lived caller (tests), nothing tied to the CLI.
_LAUNCHER = (
    "import subprocess, sys\n"
    "log = open(sys.argv[1], 'ab')\n"
    "p = subprocess.Popen(sys.argv[2:], stdin=subprocess.DEVNULL, stdout=log,"
    " stderr=subprocess.STDOUT)\n"
    "print(p.pid)\n"
)


# How long after launching a service its pid is trusted without the command-line check.
LAUNCH_GRACE_S = 30.0


def spawn_detached(argv: Sequence[str], log_file: Path, cwd: Path, env: Mapping[str, str]) -> int:
    """Start argv in its own session with output appended to log_file; return its pid."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(
        [sys.executable, "-c", _LAUNCHER, str(log_file), *argv],
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        start_new_session=True,  # Ctrl-C on the CLI must not reach the service
        check=False,
    )
    if out.returncode != 0 or not out.stdout.strip().isdigit():
        raise StackError(f"could not launch {argv[0]}: {out.stderr.strip() or out.stdout.strip()}")
    return int(out.stdout.strip())


def pid_alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it happens to be our child
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        # A zombie still answers kill(0); it is dead for our purposes.
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] != "Z"


def cmdline(pid: int) -> str | None:
    """The process's command line, or None where /proc is not available."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return None


def terminate(pid: int, grace_s: float) -> bool:
    """SIGTERM, wait up to grace_s, then SIGKILL. True when it needed the SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return False
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    for _ in range(50):
        if not pid_alive(pid):
            break
        time.sleep(0.1)
    return True


def run_logged(
    argv: Sequence[str],
    log_file: Path,
    what: str,
    service: str,
    progress: Progress,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout_s: float = 1800,
    heartbeat_s: float = 30,
) -> None:
    """Run a step to completion with its output appended to log_file; say it is still going
    every heartbeat_s (builds take minutes and silence looks like a hang)."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    since = log_file.stat().st_size if log_file.exists() else 0
    started = time.monotonic()
    with log_file.open("ab") as log:
        log.write(f"\n=== {time.strftime('%F %T')} {' '.join(argv)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        while True:
            try:
                code = proc.wait(timeout=heartbeat_s)
                break
            except subprocess.TimeoutExpired:
                elapsed = time.monotonic() - started
                if elapsed > timeout_s:
                    proc.kill()
                    proc.wait()
                    raise failure(
                        service, f"{what} took over {timeout_s:.0f} s; gave up", log_file, since
                    ) from None
                progress(f"{service}: still {what} ({elapsed:.0f} s so far; log: {log_file})")
    if code != 0:
        raise failure(service, f"{what} failed (exit code {code})", log_file, since)


# --- the service base ------------------------------------------------------------------------


class ManagedService(ABC):
    """One local server process: install once, start detached, find again, stop."""

    name: str
    # The port clients use: subclasses define it (a property checking its setting is loopback).
    port: int
    # Seconds between SIGTERM and SIGKILL on stop.
    grace_s: float = 20.0

    def __init__(self, settings: Settings, progress: Progress) -> None:
        self.settings = settings
        self.progress = progress
        self._launched_at: float | None = None  # set when this object started the process

    # What a subclass defines.

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def complete_marker(self) -> Path:
        """Written last by install(): a half-finished install is never taken for a finished one."""
        return self.home / ".complete"

    @property
    def install_log(self) -> Path:
        return self.settings.log_dir / f"{self.name}-install.log"

    @property
    @abstractmethod
    def ports(self) -> dict[int, str]:
        """Every port the service binds, mapped to the setting that chooses it."""

    @property
    @abstractmethod
    def home(self) -> Path:
        """Where the installed tool is cached (jars, binary)."""

    @property
    @abstractmethod
    def data_dir(self) -> Path: ...

    @abstractmethod
    def installed(self) -> bool: ...

    @abstractmethod
    def install(self) -> None: ...

    @abstractmethod
    def prepare(self) -> None:
        """Everything between install and launch: config files, tool checks, storage format."""

    @abstractmethod
    def command(self) -> list[str]: ...

    @abstractmethod
    def healthy(self) -> bool: ...

    @property
    @abstractmethod
    def marker(self) -> str:
        """A string in our process's command line that tells it from a recycled pid, and from the
        same service started under another LIGHTBOX_HOME."""

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    # Shared bookkeeping.

    @property
    def log_file(self) -> Path:
        return self.settings.log_dir / f"{self.name}.log"

    @property
    def pid_file(self) -> Path:
        return self.settings.data_dir / "run" / f"{self.name}.pid"

    def pid(self) -> int | None:
        """The pid of the process this stack started, if it is still that process."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        alive = pid_alive(pid)
        line = cmdline(pid) if alive else ""
        if line is None or (line and self.marker in line):
            return pid
        if alive and self._launched_at is not None and time.monotonic() - self._launched_at < LAUNCH_GRACE_S:
            # Just launched by us: the child may not have exec'd the service yet, so its command
            # line is still the launcher's. Judging it now would call a starting service dead.
            return pid
        self.pid_file.unlink(missing_ok=True)  # stale: the process is gone or the pid reused
        return None

    def status(self) -> ServiceStatus:
        pid = self.pid()
        answering = self.healthy() if port_open(self.main_port) else False
        if answering and pid is not None:
            detail = "ready"
        elif answering:
            detail = "ready, but not started by this stack (no pid file); `down` leaves it alone"
        elif pid is not None:
            detail = "process alive but not answering yet (starting, or unhealthy)"
        else:
            detail = "stopped"
        return ServiceStatus(
            self.name,
            answering or pid is not None,
            pid,
            self.address,
            self.log_file,
            self.data_dir,
            detail,
        )

    @property
    def main_port(self) -> int:
        return next(iter(self.ports))

    def running_already(self) -> bool:
        """Ours and alive, or something on our port that answers as this service."""
        return self.pid() is not None or (port_open(self.main_port) and self.healthy())

    def preflight(self) -> None:
        """Fail before installing or starting anything when a port is taken by a stranger."""
        if not self.running_already():
            self._check_ports_free()

    def start(self) -> int:
        """Start unless already there; return the log offset this run's output begins at."""
        since = self.log_file.stat().st_size if self.log_file.exists() else 0
        pid = self.pid()
        if pid is not None:
            self.progress(f"{self.name}: already running (pid {pid}), reusing it")
            return since
        if port_open(self.main_port) and self.healthy():
            self.progress(f"{self.name}: already answering on {self.address}, reusing it")
            return since
        self._check_ports_free()
        if not self.installed():
            self.install()
        self.prepare()
        self.settings.log_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        since = self.log_file.stat().st_size if self.log_file.exists() else 0
        with self.log_file.open("ab") as log:
            log.write(f"\n=== {time.strftime('%F %T')} lightbox stack: starting {self.name}\n".encode())
        self._launched_at = time.monotonic()
        pid = spawn_detached(self.command(), self.log_file, self.data_dir, self.env())
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file.write_text(f"{pid}\n")
        self.progress(f"{self.name}: started (pid {pid}); log: {self.log_file}; data: {self.data_dir}")
        return since

    def wait_ready(self, deadline: float, since: int = 0) -> None:
        while not self.check_ready(deadline, since):
            time.sleep(0.5)

    def check_ready(self, deadline: float, since: int = 0) -> bool:
        """One look: True once healthy; raises with the log tail if the process has died or the
        deadline has passed; False while still starting."""
        if port_open(self.main_port) and self.healthy():
            took = ""
            if self._launched_at is not None:
                took = f" ({time.monotonic() - self._launched_at:.1f} s after launch)"
            self.progress(f"{self.name}: ready on {self.address}{took}")
            return True
        pid = self.pid()
        if pid is None and not port_open(self.main_port):
            raise failure(self.name, "exited during startup", self.log_file, since)
        if time.monotonic() > deadline:
            still = f"; still running as pid {pid}, `down` stops it" if pid else ""
            raise failure(
                self.name,
                f"not healthy on {self.address} before the timeout{still}",
                self.log_file,
                since,
            )
        return False

    def stop(self) -> None:
        pid = self.pid()
        if pid is None:
            if port_open(self.main_port):
                self.progress(
                    f"{self.name}: something answers on {self.address} but this stack did not "
                    "start it; leaving it alone"
                )
            return
        self.progress(f"{self.name}: stopping pid {pid}")
        if terminate(pid, self.grace_s):
            self.progress(f"{self.name}: did not exit within {self.grace_s:.0f} s; killed it")
        self.pid_file.unlink(missing_ok=True)

    def _check_ports_free(self) -> None:
        for port, setting in self.ports.items():
            if port_open(port):
                raise StackError(
                    f"{self.name}: port {port} on {LOOPBACK} ({setting}) is in use by another "
                    f"process that does not answer as {self.name}. Stop that process, or choose "
                    f"another port with LIGHTBOX_{setting.upper().replace('.', '__')}."
                )
