"""Carrying out one planned action against the running pipeline and its stack, and keeping count.

An outage always ends inside apply(): a frozen MinIO is thawed and a stopped service started again
in a finally block, so an exception or Ctrl-C mid-fault never leaves the stack broken.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.harness.chaos.plan import KILLS, Action, Fault
from gateway.harness.chaos.stacks import ChaosStack
from gateway.harness.chaos.supervision import Watcher


@dataclass
class FaultLog:
    applied: Counter[Fault] = field(default_factory=Counter)
    skipped: list[str] = field(default_factory=list)  # planned, but nothing to act on
    recoveries_s: list[float] = field(default_factory=list)  # restart-to-ready of Kafka, MinIO
    lines: list[str] = field(default_factory=list)

    @property
    def kills(self) -> int:
        return sum(n for fault, n in self.applied.items() if fault in KILLS)

    @property
    def outages(self) -> int:
        return sum(n for fault, n in self.applied.items() if fault not in KILLS)


class Injector:
    def __init__(self, stack: ChaosStack, watcher: Watcher, progress: Callable[[str], None]) -> None:
        self.stack = stack
        self.watcher = watcher
        self.progress = progress
        self.log = FaultLog()

    def apply(self, action: Action) -> None:
        skipped = self._apply(action)
        line = f"{action.describe()}: {'done' if skipped is None else f'skipped ({skipped})'}"
        self.log.lines.append(line)
        self.progress(f"  {line}")
        if skipped is None:
            self.log.applied[action.fault] += 1
        else:
            self.log.skipped.append(line)

    def _apply(self, action: Action) -> str | None:
        """Carry the action out; None when done, else why it could not be."""
        if action.fault in KILLS:
            pid = self.watcher.kill(action.stage, action.replica, signal.SIGKILL)
            return None if pid is not None else "not running at that moment"
        if action.fault is Fault.FREEZE_STORAGE:
            if not self.stack.freeze_storage():
                return "MinIO was not started by this stack"
            try:
                time.sleep(action.duration_s)
            finally:
                self.stack.thaw_storage()
            return None
        if action.fault is Fault.RESTART_STORAGE:
            if not self.stack.stop_storage():
                return "MinIO was not started by this stack"
            try:
                time.sleep(action.duration_s)
            finally:
                self.log.recoveries_s.append(self.stack.start_storage())
            return None
        if action.fault is Fault.KILL_BROKER:
            if not self.stack.kill_broker():
                return "the broker was not started by this stack"
            try:
                time.sleep(action.duration_s)
            finally:
                self.log.recoveries_s.append(self.stack.start_broker())
            return None
        raise ValueError(f"unknown fault {action.fault}")
