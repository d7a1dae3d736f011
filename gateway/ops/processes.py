"""`lightbox ps`: the processes `lightbox run all` supervises, read from the state file it keeps
(deploy/local/supervisor.py writes it atomically on every change)."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from deploy.local.supervisor import state_file_of


@dataclass(frozen=True)
class ProcessRow:
    name: str
    stage: str
    pid: int | None
    state: str
    restarts: int
    started_at: float | None
    last_exit_code: int | None
    last_error: str
    next_restart_at: float | None
    log_file: str

    @classmethod
    def of(cls, data: dict[str, Any]) -> ProcessRow:
        return cls(
            name=str(data.get("name", "?")),
            stage=str(data.get("stage", "?")),
            pid=data.get("pid"),
            state=str(data.get("state", "?")),
            restarts=int(data.get("restarts", 0)),
            started_at=data.get("started_at"),
            last_exit_code=data.get("last_exit_code"),
            last_error=str(data.get("last_error") or ""),
            next_restart_at=data.get("next_restart_at"),
            log_file=str(data.get("log_file", "")),
        )

    def uptime(self, now: float | None = None) -> str:
        if self.started_at is None or self.pid is None:
            return "-"
        seconds = int((now or time.time()) - self.started_at)
        return (
            f"{seconds // 3600}h{seconds // 60 % 60:02d}m"
            if seconds >= 3600
            else f"{seconds // 60}m{seconds % 60:02d}s"
        )


@dataclass
class ProcessReport:
    state_file: Path
    found: bool
    supervisor_pid: int | None = None
    supervisor_running: bool = False
    updated_at: float | None = None
    processes: list[ProcessRow] = field(default_factory=list)

    def headline(self) -> str:
        if not self.found:
            return f"no `lightbox run all` has run here ({self.state_file} does not exist)"
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.updated_at or 0))
        if self.supervisor_running:
            return (
                f"`lightbox run all` (pid {self.supervisor_pid}) supervises {len(self.processes)} processes"
            )
        return (
            f"`lightbox run all` (pid {self.supervisor_pid}) is not running; its last state, from {when}, "
            "follows (pids shown may be gone)"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "state_file": str(self.state_file),
            "found": self.found,
            "supervisor_pid": self.supervisor_pid,
            "supervisor_running": self.supervisor_running,
            "updated_at": self.updated_at,
            "processes": [asdict(row) for row in self.processes],
        }


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process, but alive
    return True


def read_processes(home: Path) -> ProcessReport:
    path = state_file_of(home)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return ProcessReport(path, found=False)
    except (OSError, ValueError) as exc:
        # Replaced atomically, so a half-written file means something else wrote it.
        raise ValueError(f"{path} is not a supervisor state file: {exc}") from exc
    pid = data.get("supervisor_pid")
    return ProcessReport(
        state_file=path,
        found=True,
        supervisor_pid=pid,
        supervisor_running=pid_alive(pid),
        updated_at=data.get("updated_at"),
        processes=[ProcessRow.of(row) for row in data.get("processes", [])],
    )
