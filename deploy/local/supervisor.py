"""`lightbox run all`: every stage as its own process, restarted if it dies.

Separate processes, not tasks in one loop: stages scale and fail independently as they would in
production, and the event-log sink can own the embedded ClickHouse engine alone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from processors.topology import STAGE_NAMES, STAGES

CRASH_LOOP_EXITS = 3  # consecutive quick failures before the supervisor gives up on a stage
QUICK_S = 10.0  # an exit this soon after a start counts as a failure to start


class StageCrashLoop(RuntimeError):
    """A stage keeps failing right after it starts: a bug or bad configuration, not a hiccup."""


@dataclass
class Child:
    stage: str
    log_file: Path
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    quick_failures: int = 0
    started_at: float = field(default=0.0)
    metrics_port: int = 0


def copies_of(stage: str, copies: int) -> int:
    """How many processes of this stage to run: one for a singleton (the event-log sink owns the
    embedded engine, and a second copy could not open it), else as many as asked."""
    singleton = any(spec.singleton for spec in STAGES if spec.name == stage)
    return 1 if singleton else copies


def log_tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class Supervisor:
    def __init__(
        self,
        stages: list[str],
        log_dir: Path,
        env: dict[str, str] | None = None,
        copies: int = 1,
        echo: bool = False,
        metrics_base_port: int = 0,
    ) -> None:
        if copies < 1:
            raise ValueError(f"copies must be at least 1, not {copies}")
        self.children = [
            Child(stage, log_dir / f"{stage}{'' if copies == 1 else f'-{i}'}.log")
            for stage in stages
            for i in range(copies_of(stage, copies))
        ]
        # One Prometheus port per process (base, base+1, ...): they cannot share one.
        if metrics_base_port:
            for offset, child in enumerate(self.children):
                child.metrics_port = metrics_base_port + offset
        self.env = {**os.environ, **(env or {})}
        self.echo = echo
        self._stopping = False
        log_dir.mkdir(parents=True, exist_ok=True)

    def _spawn(self, child: Child) -> None:
        out = None if self.echo else open(child.log_file, "ab")  # noqa: SIM115 - owned by the child
        env = self.env
        if child.metrics_port:
            env = {**env, "LIGHTBOX_STAGE__METRICS_PORT": str(child.metrics_port)}
        child.process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli.main", "run", child.stage],
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
            env=env,
        )
        child.started_at = time.monotonic()

    def start(self) -> None:
        for child in self.children:
            self._spawn(child)

    def stop(self, grace_s: float = 15.0) -> None:
        self._stopping = True
        for child in self.children:
            if child.process and child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for child in self.children:
            if child.process is None:
                continue
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.process.kill()

    def check(self) -> list[str]:
        """Restart children that died; returns what happened, for the caller to report.

        Raises StageCrashLoop when a stage failed on its own (exit code > 0; a kill by signal does
        not count) right after starting several times in a row.
        """
        notes = []
        for child in self.children:
            if self._stopping or child.process is None or child.process.poll() is None:
                continue
            code = child.process.returncode
            child.restarts += 1
            quick = time.monotonic() - child.started_at < QUICK_S
            child.quick_failures = child.quick_failures + 1 if quick and code > 0 else 0
            if child.quick_failures >= CRASH_LOOP_EXITS:
                raise StageCrashLoop(
                    f"stage {child.stage} failed {child.quick_failures} times right after starting "
                    f"(exit {code}); last lines of {child.log_file}:\n{log_tail(child.log_file)}"
                )
            # Back off a child that dies right after starting, so a broken config does not spin.
            if quick:
                time.sleep(min(10, child.restarts))
            notes.append(f"{child.stage} exited with {code}; restarting (see {child.log_file})")
            self._spawn(child)
        return notes

    def run_forever(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self.stop())
        self.start()
        try:
            while not self._stopping:
                for note in self.check():
                    print(note, file=sys.stderr, flush=True)
                time.sleep(1)
        except StageCrashLoop as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            self.stop()
            raise SystemExit(1) from None
        except KeyboardInterrupt:
            self.stop()


def all_stages() -> list[str]:
    return list(STAGE_NAMES)
