"""A running pipeline for the demo, the benchmark and the integration tests: the stack, every stage
as a supervised process under a topic prefix of its own, and ways to feed it and wait on it.

A fresh prefix per session means fresh topics and consumer groups: a second demo run does real
work instead of being (correctly) de-duplicated against the first.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deploy.local.stack import LocalStack
from deploy.local.supervisor import Copies, Supervisor, all_stages
from gateway.ops.submit import parse_lines, publish
from processors.config import Settings
from processors.eventlog.reader import EventLogReader
from processors.intake.fanout import fan_out
from processors.job_states import is_terminal
from processors.prompting.templates import TemplateStore


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def expected_job_ids(events: list[dict[str, Any]]) -> list[str]:
    """The job ids intake will derive: fan-out is deterministic, so they are known up front."""
    templates = TemplateStore()
    return [job["job_id"] for event in events for job in fan_out(event, 0, templates.resolve_version)]


class StaticServer:
    """A directory on loopback over HTTP, standing in for a catalog's image host."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "http.server",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--directory",
                str(directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"the catalog image server did not start on port {self.port}")

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(5)


class PipelineSession:
    def __init__(
        self,
        settings: Settings,
        prefix: str,
        env: dict[str, str] | None = None,
        stages: list[str] | None = None,
        progress: Callable[[str], None] = print,
        copies: Copies = 1,
    ) -> None:
        """copies: processes per stage, or per stage name (a singleton stage runs once)."""
        self.base_settings = settings
        self.settings = settings.model_copy(
            update={"kafka": settings.kafka.model_copy(update={"topic_prefix": prefix})}
        )
        self.env = {
            "LIGHTBOX_KAFKA__TOPIC_PREFIX": prefix,
            "LIGHTBOX_REFERENCES__ALLOW_HOSTS": json.dumps(["127.0.0.1"]),
            "LIGHTBOX_HOME": str(settings.home),
            **(env or {}),
        }
        self.stages = stages or all_stages()
        self.progress = progress
        self.copies = copies
        self.log_dir = settings.log_dir / "sessions" / prefix.rstrip(".")
        self.supervisor: Supervisor | None = None

    def start(self, start_stack: bool = True, health_timeout_s: float = 90) -> None:
        stack = LocalStack(self.base_settings, progress=self.progress)
        if start_stack:
            stack.up()
        session_stack = LocalStack(self.settings, progress=lambda _: None)
        session_stack.ensure_topics()
        # Every topic carries Confluent-framed Avro: the prefix's subjects must exist first.
        session_stack.ensure_schemas()
        self.supervisor = Supervisor(
            self.stages,
            self.log_dir,
            env=self.env,
            copies=self.copies,
            settings=self.settings.supervisor,
            state_file=self.log_dir / "supervisor.json",
        )
        self.supervisor.start()
        self.progress(f"started {len(self.supervisor.children)} stage processes; logs in {self.log_dir}")
        if "eventlog" in self.stages:
            self._wait_for_eventlog(health_timeout_s)
        self._wait_for_groups(health_timeout_s)

    def _wait_for_groups(self, timeout_s: float) -> None:
        """Wait until every stage has joined its consumer group, so the first jobs do not pay for
        the group joins (which would make the latency figures lie)."""
        from confluent_kafka import ConsumerGroupState
        from confluent_kafka.admin import AdminClient

        from processors.kafka_clients import group_id_for, share_group_stages

        admin = AdminClient({"bootstrap.servers": self.settings.kafka.bootstrap})
        shared = share_group_stages(self.settings)
        groups = [group_id_for(self.settings, stage) for stage in self.stages if stage not in shared]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            described = admin.describe_consumer_groups(groups)
            stable = 0
            for future in described.values():
                try:
                    group = future.result(timeout=10)
                except Exception:
                    continue
                stable += group.state == ConsumerGroupState.STABLE and len(group.members) > 0
            if stable == len(groups):
                return
            assert self.supervisor is not None
            for note in self.supervisor.check():
                self.progress(note)
            time.sleep(0.5)
        self.progress("warning: not every stage joined its consumer group in time; carrying on")

    def _wait_for_eventlog(self, timeout_s: float) -> None:
        reader = EventLogReader(self.settings)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if asyncio.run(reader.healthy()):
                return
            assert self.supervisor is not None
            for note in self.supervisor.check():
                self.progress(note)
            time.sleep(0.5)
        raise RuntimeError(f"the event-log sink did not become ready; see {self.log_dir / 'eventlog.log'}")

    def stop(self) -> None:
        if self.supervisor is not None:
            self.supervisor.stop()
            self.supervisor = None

    def delete_topics(self) -> list[str]:
        """Delete this session's topics (its prefix's); call after stop()."""
        prefix = self.settings.kafka.topic_prefix
        return LocalStack(self.settings, progress=lambda _: None).delete_topics(prefix)

    def __enter__(self) -> PipelineSession:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def submit(self, events: list[dict[str, Any]]) -> int:
        parsed = parse_lines([json.dumps(e) for e in events])
        if parsed.errors:
            raise ValueError("; ".join(str(e) for e in parsed.errors))
        return publish(self.settings, parsed.events)

    def states(self, job_ids: list[str]) -> dict[str, str]:
        if not job_ids:
            return {}
        return asyncio.run(EventLogReader(self.settings).states(job_ids))

    def wait_for(
        self,
        job_ids: list[str],
        timeout_s: float,
        on_progress: Callable[[int, int], None] | None = None,
        poll_s: float = 0.5,
        last_poll_s: float | None = None,
    ) -> dict[str, str]:
        """The jobs' states once all are terminal, or at the timeout; asks the event log every
        poll_s (each ask is a query the sink answers, on the cores the pipeline runs on), and
        every last_poll_s (default: poll_s) once nine in ten are terminal, so the end is seen
        soon after it comes."""
        deadline = time.monotonic() + timeout_s
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            states = self.states(job_ids)
            done = sum(1 for j in job_ids if is_terminal(states.get(j)))
            if on_progress:
                on_progress(done, len(job_ids))
            if done == len(job_ids):
                return states
            if self.supervisor is not None:
                for note in self.supervisor.check():
                    self.progress(note)
            near_end = last_poll_s is not None and done * 10 >= len(job_ids) * 9
            time.sleep(last_poll_s if near_end and last_poll_s is not None else poll_s)
        return states
