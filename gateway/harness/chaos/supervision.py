"""The pipeline under test: every stage in two replicas under the supervisor, watched all along.

The watcher (a thread) keeps calling the supervisor's check(), which restarts what died, and
tells the exits the chaos plan caused (a SIGKILL of a pid the injector recorded) from every other
exit: a stage that died on its own is a containment failure, whatever the supervisor then did.
It also records each time the supervisor gave up on a stage (StageCrashLoop).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from deploy.local.session import PipelineSession
from deploy.local.supervisor import StageCrashLoop, Supervisor, log_tail

SIGKILL_EXIT = -9
TEND_INTERVAL_S = 0.2


class ReplicatedSession(PipelineSession):
    """PipelineSession with `copies` processes per stage (singletons once), by default two, and
    longer waits for them to join; the stack is expected to be up already."""

    def __init__(self, *args: Any, copies: int = 2, **kwargs: Any) -> None:
        super().__init__(*args, copies=copies, **kwargs)

    def start(self, start_stack: bool = False, health_timeout_s: float = 180) -> None:
        super().start(start_stack=start_stack, health_timeout_s=health_timeout_s)


@dataclass(frozen=True)
class Exit:
    stage: str
    replica: int
    pid: int
    code: int | None
    log_tail: str


@dataclass
class Watch:
    """What the watcher saw: planned kills delivered, exits nobody planned, supervisor give-ups."""

    killed_pids: set[int] = field(default_factory=set)
    kills_by_child: Counter[int] = field(default_factory=Counter)
    unplanned: list[Exit] = field(default_factory=list)
    gave_up: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class Watcher(threading.Thread):
    def __init__(self, supervisor: Supervisor) -> None:
        super().__init__(name="chaos-watcher", daemon=True)
        self.supervisor = supervisor
        self.watch = Watch()
        self.lock = threading.Lock()
        self._stop_event = threading.Event()
        self._seen: set[int] = set()  # pids whose exit was looked at already
        self.replica_of = _replica_numbers(supervisor)

    def children_of(self, stage: str) -> list[Any]:
        return [c for c in self.supervisor.children if c.stage == stage]

    def kill(self, stage: str, replica: int, signal_number: int) -> int | None:
        """Signal one replica if it is running; the pid signalled, or None."""
        children = self.children_of(stage)
        if not children:
            return None
        child = children[replica % len(children)]
        process = child.process
        if process is None or process.poll() is not None:
            return None
        with self.lock:
            self.watch.killed_pids.add(process.pid)
            self.watch.kills_by_child[id(child)] += 1
        process.send_signal(signal_number)
        return int(process.pid)

    def run(self) -> None:
        while not self._stop_event.is_set():
            self._observe()
            try:
                notes = self.supervisor.check()
            except StageCrashLoop as exc:
                with self.lock:
                    # Raised again on every look at a stage given up on: recorded once.
                    if str(exc) not in self.watch.gave_up:
                        self.watch.gave_up.append(str(exc))
                notes = []
            with self.lock:
                self.watch.notes.extend(notes)
            self._stop_event.wait(TEND_INTERVAL_S)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=60)

    def _observe(self) -> None:
        for child in self.supervisor.children:
            process = child.process
            if process is None or process.pid in self._seen or process.poll() is None:
                continue
            self._seen.add(process.pid)
            with self.lock:
                planned = process.pid in self.watch.killed_pids and process.returncode == SIGKILL_EXIT
                if not planned:
                    self.watch.unplanned.append(
                        Exit(
                            child.stage,
                            self.replica_of.get(id(child), 0),
                            process.pid,
                            process.returncode,
                            log_tail(child.log_file, 40),
                        )
                    )

    def snapshot(self) -> SupervisionReport:
        """The end state: what each child went through, and who is not running now."""
        self._observe()
        with self.lock:
            watch = self.watch
            restarts: dict[str, int] = {}
            unexplained: dict[str, int] = {}
            down: list[str] = []
            for child in self.supervisor.children:
                name = f"{child.stage}#{self.replica_of.get(id(child), 0)}"
                count = int(getattr(child, "restarts", 0))
                restarts[name] = count
                # Restarts the plan does not account for: an exit the watcher may have missed
                # between two looks still shows here.
                extra = count - watch.kills_by_child[id(child)]
                if extra > 0:
                    unexplained[name] = extra
                if child.process is None or child.process.poll() is not None or child.state == "failed":
                    down.append(name)
            return SupervisionReport(
                restarts=restarts,
                unexplained_restarts=unexplained,
                unplanned=list(watch.unplanned),
                gave_up=list(watch.gave_up),
                not_running=down,
                kills_delivered=sum(watch.kills_by_child.values()),
            )


@dataclass(frozen=True)
class SupervisionReport:
    restarts: dict[str, int]
    unexplained_restarts: dict[str, int]
    unplanned: list[Exit]
    gave_up: list[str]
    not_running: list[str]
    kills_delivered: int


def _replica_numbers(supervisor: Supervisor) -> dict[int, int]:
    numbers: dict[int, int] = {}
    seen: Counter[str] = Counter()
    for child in supervisor.children:
        numbers[id(child)] = seen[child.stage]
        seen[child.stage] += 1
    return numbers


def wait_until(predicate: Any, timeout_s: float, interval_s: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return bool(predicate())
