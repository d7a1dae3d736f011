"""`lightbox run all`: every stage as its own process, restarted if it dies, never given up on once
it has started.

Separate processes, not tasks in one loop: stages scale and fail independently as they would in
production, and the event-log sink can own the embedded ClickHouse engine alone.

The supervisor isolates:
- A stage that dies is restarted with capped exponential backoff (processors/backoff.py): the
  first restart after `restart_initial_s`, then twice as long each time it dies again soon after,
  up to `restart_max_s`; a run that lasted `healthy_after_s` resets the wait. Each restart is
  reported with the exit code and the last lines of the stage's log.
- The other stages keep running: one stage's crash loop stops nothing else.
- Only a stage that never started (it never logged that it started, and never lived
  `healthy_after_s`) and failed `first_start_attempts` times in a row stops `run all`, with its log
  tail: that is a configuration error, and the pipeline cannot run without the stage.
- Every change is written to a small JSON state file (atomically replaced), which `lightbox ps`
  reads: each process, its pid, state, restarts and last error.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from processors.backoff import backoff_delay
from processors.config import SupervisorSettings
from processors.topology import STAGE_NAMES, STAGES

# What the stage runtime logs once the stage's start() returned (processors/runtime/runner.py):
# the process is up, so a later exit is a crash, not a failure to start.
STARTED_MARKER = b'"msg": "stage started"'
LOG_TAIL_LINES = 25
REPORT_TAIL_LINES = 8


class StageCrashLoop(RuntimeError):
    """A stage failed again and again without ever starting: a configuration error, not a hiccup."""


# How to start one stage's process: argv for `lightbox run STAGE` (tests start stand-ins).
Command = Callable[[str], list[str]]


def stage_command(stage: str) -> list[str]:
    return [sys.executable, "-m", "gateway.cli.main", "run", stage]


@dataclass
class Child:
    stage: str
    log_file: Path
    name: str = ""  # the stage, or stage-N when there are copies
    process: subprocess.Popen[bytes] | None = None
    state: str = "starting"  # starting | running | restarting | stopped | failed
    restarts: int = 0
    # Deaths in a row that came soon after a start; the next start waits backoff_delay of it.
    failures_in_a_row: int = 0
    ever_started: bool = False
    start_failures: int = 0  # exits of its own in a row before it ever started
    started: bool = False  # this run logged that it started
    started_at: float = field(default=0.0)  # monotonic
    started_wall: float = 0.0
    next_start_at: float | None = None  # monotonic; set while restarting
    last_exit_code: int | None = None
    last_error: str = ""
    log_offset: int = 0  # where this run's output begins in the log file
    metrics_port: int = 0

    def __post_init__(self) -> None:
        self.name = self.name or self.stage

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None


# Processes per stage: one number for every stage, or a number per stage (stages not named run once).
Copies = int | Mapping[str, int]


def copies_of(stage: str, copies: Copies) -> int:
    """How many processes of this stage to run: one for a singleton (the event-log sink owns the
    embedded engine, and a second copy could not open it), else as many as asked."""
    singleton = any(spec.singleton for spec in STAGES if spec.name == stage)
    wanted = copies if isinstance(copies, int) else copies.get(stage, 1)
    return 1 if singleton else wanted


def check_copies(copies: Copies) -> None:
    """ValueError for a count under 1, a stage the topology does not have, or more than one
    copy asked by name of a singleton (a plain number leaves singletons at one, as it always did)."""
    counts = {"every stage": copies} if isinstance(copies, int) else dict(copies)
    for stage, count in counts.items():
        if stage != "every stage" and stage not in STAGE_NAMES:
            raise ValueError(f"no stage called {stage!r} (stages: {', '.join(STAGE_NAMES)})")
        if count < 1:
            raise ValueError(f"copies of {stage} must be at least 1, not {count}")
        if count > 1 and any(spec.singleton and spec.name == stage for spec in STAGES):
            raise ValueError(f"{stage} is a singleton: it runs as one process")


def parse_copies(text: str) -> Copies:
    """`--copies`: `N` (every stage N processes, singletons one) or `stage=N,...` (those stages N,
    the rest one). ValueError with the reason when it is neither."""
    text = text.strip()
    copies: Copies
    if "=" not in text:
        try:
            copies = int(text)
        except ValueError:
            raise ValueError(f"expected N or stage=N,... not {text!r}") from None
    else:
        copies = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            stage, sep, count = part.partition("=")
            if not sep or not count.strip().lstrip("-").isdigit():
                raise ValueError(f"expected stage=N, not {part!r}")
            if stage.strip() in copies:
                raise ValueError(f"{stage.strip()} is named twice")
            copies[stage.strip()] = int(count)
    check_copies(copies)
    return copies


def log_tail(path: Path, lines: int = LOG_TAIL_LINES, since: int = 0) -> str:
    """The last lines of a log; since: a byte offset, so a report shows only one run's output."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(since, fh.tell() - 64 * 1024))  # the tail only, however large the log
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(nothing logged by this run)"


def last_error_of(tail: str) -> str:
    """One line saying why a process died: the last log line, its message if it is a JSON log
    line (with the last line of the traceback it carries), cut short."""
    for line in reversed(tail.splitlines()):
        line = line.strip()
        if not line:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            return line[:300]
        if not isinstance(record, dict):
            return line[:300]
        text = str(record.get("msg", line))
        error = str(record.get("error", "")).strip().splitlines()
        return (f"{text}: {error[-1]}" if error else text)[:300]
    return ""


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def process_cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time the kernel has charged to a live process (with its reaped
    children: a stage's helper tools), from /proc/PID/stat; None when it is gone or there is no
    /proc. The process's own accounting, read from outside it, so a stage needs no hook for it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count fields after the last ")".
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
    return (utime + stime + cutime + cstime) / os.sysconf("SC_CLK_TCK")


def write_state(path: Path, state: dict[str, Any]) -> None:
    """Replace the state file atomically: a reader sees the old file or the new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(state, fh, indent=2)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class Supervisor:
    def __init__(
        self,
        stages: list[str],
        log_dir: Path,
        env: dict[str, str] | None = None,
        copies: Copies | None = None,
        echo: bool = False,
        metrics_base_port: int = 0,
        settings: SupervisorSettings | None = None,
        state_file: Path | None = None,
        command: Command = stage_command,
    ) -> None:
        self.settings = settings or SupervisorSettings()
        # None: the configured copies (supervisor.copies; stages not named there run once).
        copies = self.settings.copies if copies is None else copies
        check_copies(copies)
        self.copies = copies
        self.children = []
        for stage in stages:
            n = copies_of(stage, copies)
            for i in range(n):
                name = stage if n == 1 else f"{stage}-{i}"
                self.children.append(Child(stage, log_dir / f"{name}.log", name=name))
        # One Prometheus port per process (base, base+1, ...): they cannot share one.
        if metrics_base_port:
            for offset, child in enumerate(self.children):
                child.metrics_port = metrics_base_port + offset
        self.env = {**os.environ, **(env or {})}
        self.echo = echo
        self.state_file = state_file
        self.command = command
        self.started_wall = time.time()
        self._stopping = False
        self._echo_offsets: dict[str, int] = {}
        log_dir.mkdir(parents=True, exist_ok=True)

    # -- processes ---------------------------------------------------------------------------

    def _spawn(self, child: Child) -> None:
        # Always to the log file, echo or not: the log is how a start is recognised, and the
        # tail is what a crash report shows.
        with child.log_file.open("ab") as out:
            child.log_offset = out.tell()
            # The copy's name, stable across restarts: its transactional.id (a restart fences the
            # killed copy's producer and aborts its open transaction at once).
            env = {**self.env, "LIGHTBOX_KAFKA__INSTANCE": child.name}
            if child.metrics_port:
                env = {**env, "LIGHTBOX_STAGE__METRICS_PORT": str(child.metrics_port)}
            child.process = subprocess.Popen(
                self.command(child.stage), stdout=out, stderr=subprocess.STDOUT, env=env
            )
        child.started_at = time.monotonic()
        child.started_wall = time.time()
        child.started = False
        child.next_start_at = None
        child.state = "starting"

    def start(self) -> None:
        for child in self.children:
            self._spawn(child)
        self._write_state()

    def stop(self, grace_s: float = 15.0) -> None:
        self._stopping = True
        for child in self.children:
            if child.process and child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for child in self.children:
            if child.process is not None:
                try:
                    child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    child.process.kill()
                    child.process.wait()
            if child.state != "failed":
                child.state = "stopped"
            child.next_start_at = None
        self._write_state()

    # -- one look at every child ------------------------------------------------------------

    def check(self) -> list[str]:
        """Restart children that died when their backoff is up; returns what happened, for the
        caller to print. Never waits: a stage backing off does not delay the others.

        Raises StageCrashLoop when a stage that never started has failed `first_start_attempts`
        times in a row (exit code > 0; a kill by signal is not a failure to start)."""
        notes: list[str] = []
        if self._stopping:
            return notes
        changed = False
        now = time.monotonic()
        for child in self.children:
            if child.process is not None and child.process.poll() is None:
                changed |= self._note_started(child, now)
                continue
            if child.next_start_at is None and child.process is not None:
                notes.append(self._on_exit(child, now))
                changed = True
            if child.next_start_at is not None and now >= child.next_start_at:
                child.restarts += 1
                self._spawn(child)
                changed = True
        if changed:
            self._write_state()
        if self.echo:
            self._echo_logs()
        return notes

    def _note_started(self, child: Child, now: float) -> bool:
        if child.started:
            if child.failures_in_a_row and now - child.started_at >= self.settings.healthy_after_s:
                child.failures_in_a_row = 0  # a healthy run: the next crash restarts quickly again
            return False
        if now - child.started_at >= self.settings.healthy_after_s or self._logged_start(child):
            child.started = child.ever_started = True
            child.state = "running"
            if now - child.started_at >= self.settings.healthy_after_s:
                child.failures_in_a_row = 0
            return True
        return False

    def _logged_start(self, child: Child) -> bool:
        try:
            with child.log_file.open("rb") as fh:
                fh.seek(child.log_offset)
                return STARTED_MARKER in fh.read(1024 * 1024)
        except OSError:
            return False

    def _on_exit(self, child: Child, now: float) -> str:
        assert child.process is not None
        code = int(child.process.returncode)
        self._note_started(child, now)  # it may have logged its start just before dying
        uptime = now - child.started_at
        healthy_run = uptime >= self.settings.healthy_after_s
        tail = log_tail(child.log_file, LOG_TAIL_LINES, since=child.log_offset)
        child.last_exit_code = code
        child.last_error = f"{describe_exit(code)}: {last_error_of(tail)}".rstrip(": ")
        child.failures_in_a_row = 1 if healthy_run else child.failures_in_a_row + 1
        # Only exits of its own count towards "cannot start": a kill by signal is someone else's.
        child.start_failures = child.start_failures + 1 if code > 0 and not child.ever_started else 0
        if child.start_failures >= self.settings.first_start_attempts:
            child.state = "failed"
            self._write_state()
            raise StageCrashLoop(
                f"stage {child.name} failed {child.start_failures} times without ever starting "
                f"({describe_exit(code)}): a configuration error? Last lines of {child.log_file}:\n{tail}"
            )
        delay = backoff_delay(
            child.failures_in_a_row, self.settings.restart_initial_s, self.settings.restart_max_s
        )
        child.next_start_at = now + delay
        child.state = "restarting"
        short_tail = "\n".join(f"    {line}" for line in tail.splitlines()[-REPORT_TAIL_LINES:])
        return (
            f"{child.name} (pid {child.pid}) died after {uptime:.1f}s with {describe_exit(code)}; "
            f"restart #{child.restarts + 1} in {delay:.1f}s. Last lines of {child.log_file}:\n{short_tail}"
        )

    def cpu_seconds(self) -> dict[str, float]:
        """CPU-seconds each live process has used since it started, by process name (a process
        restarted since an earlier reading starts again from zero: compare `restarts`)."""
        readings: dict[str, float] = {}
        for child in self.children:
            if child.process is not None and child.process.poll() is None:
                seconds = process_cpu_seconds(child.process.pid)
                if seconds is not None:
                    readings[child.name] = seconds
        return readings

    # -- what `lightbox ps` reads ------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        now, wall = time.monotonic(), time.time()
        processes = []
        for child in self.children:
            alive = child.process is not None and child.process.poll() is None
            processes.append(
                {
                    "name": child.name,
                    "stage": child.stage,
                    "pid": child.pid if alive else None,
                    "state": child.state,
                    "restarts": child.restarts,
                    "started_at": child.started_wall if alive else None,
                    # Wall-clock time, so a reader later still knows when.
                    "next_restart_at": (
                        wall + max(0.0, child.next_start_at - now)
                        if child.next_start_at is not None
                        else None
                    ),
                    "last_exit_code": child.last_exit_code,
                    "last_error": child.last_error,
                    "log_file": str(child.log_file),
                    "metrics_port": child.metrics_port or None,
                }
            )
        return {
            "supervisor_pid": os.getpid(),
            "started_at": self.started_wall,
            "updated_at": wall,
            "processes": processes,
        }

    def _write_state(self) -> None:
        if self.state_file is not None:
            write_state(self.state_file, self.snapshot())

    def _echo_logs(self) -> None:
        """With --echo: print what each process logged since the last look, prefixed by its name."""
        for child in self.children:
            offset = self._echo_offsets.get(child.name, 0)
            try:
                with child.log_file.open("rb") as fh:
                    fh.seek(offset)
                    data = fh.read()
            except OSError:
                continue
            complete = data.rfind(b"\n") + 1
            for line in data[:complete].decode("utf-8", "replace").splitlines():
                print(f"[{child.name}] {line}", flush=True)
            self._echo_offsets[child.name] = offset + complete

    def run_forever(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self.stop())
        if self.echo:
            # Only what is logged from now on.
            for child in self.children:
                with contextlib.suppress(OSError):
                    self._echo_offsets[child.name] = child.log_file.stat().st_size
        self.start()
        try:
            while not self._stopping:
                for note in self.check():
                    print(note, file=sys.stderr, flush=True)
                time.sleep(0.5)
        except StageCrashLoop as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            self.stop()
            raise SystemExit(1) from None
        except KeyboardInterrupt:
            self.stop()


def state_file_of(home: Path) -> Path:
    """Where `lightbox run all` keeps its state for `lightbox ps`."""
    return home / "run" / "supervisor.json"


def all_stages() -> list[str]:
    return list(STAGE_NAMES)
