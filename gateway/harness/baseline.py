"""The bench's baseline: the pipeline's image work as one plain loop, in one process, no Kafka.

Each job goes through the shipped stages' own handlers in flow order (references, prompt,
generate, quality, postprocess, publish), one job after another, with the same object storage
and the same catalog images as the pipeline run beside it. Intake is left out: its handler is a
changelog-backed ledger on Kafka, and its job records are what `fan_out` makes (as intake's
are). Between stages a record goes through its topic's Avro schema (encode, decode), so every
handler sees what it would read from Kafka; there is no broker, no batching, no polling and no
commit. What the loop takes is the price of the work alone: what the pipeline adds on top of
it, and what running its stages side by side wins back, is the ratio the bench prints.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from processors.config import Settings
from processors.intake.fanout import fan_out
from processors.prompting.templates import TemplateStore
from processors.runtime import InputRecord, Stage, StageContext
from processors.runtime.stage import BatchStage
from processors.topology import STAGES
from schemas.serde import AvroSerde
from schemas.topics import SCHEMA_OF, Topic

# The stages a job's image work passes through, in order, after intake.
BASELINE_STAGES = ("references", "prompt", "generate", "quality", "postprocess", "publish")


@dataclass
class BaselineResult:
    jobs: int
    published: int
    elapsed_s: float
    # Per stage: CPU-seconds of this process while that stage's handler ran (its threads included).
    cpu_s: dict[str, float] = field(default_factory=dict)
    wall_s: dict[str, float] = field(default_factory=dict)
    outcomes: dict[str, str] = field(default_factory=dict)  # job id -> where it ended
    # The untimed warm-up before them: how many jobs, and how many of those published.
    warmup_jobs: int = 0
    warmup_published: int = 0

    @property
    def jobs_per_s(self) -> float:
        return self.published / self.elapsed_s if self.elapsed_s > 0 else 0.0


def _stage_class(name: str) -> type[Stage]:
    import importlib

    spec = next(s for s in STAGES if s.name == name)
    module, _, cls = spec.import_path.partition(":")
    return getattr(importlib.import_module(module), cls)  # type: ignore[no-any-return]


class _Serdes:
    """Schemaless Avro per topic: the shape a handler reads from Kafka, without a registry."""

    def __init__(self) -> None:
        self._by_topic: dict[Topic, AvroSerde] = {}

    def through(self, topic: Topic, value: dict[str, Any]) -> dict[str, Any]:
        serde = self._by_topic.get(topic)
        if serde is None:
            serde = self._by_topic[topic] = AvroSerde(SCHEMA_OF[topic])
        return serde.decode(serde.encode(value))


async def _handle(stage: Stage, record: InputRecord) -> Any:
    if isinstance(stage, BatchStage):
        (outcome,) = await stage.handle_batch([record])
    else:
        outcome = await stage.handle(record)
    if outcome.effects:  # uploads the runtime would await before producing
        await asyncio.gather(*outcome.effects)
    return outcome


def _jobs(events: list[dict[str, Any]], templates: TemplateStore) -> list[dict[str, Any]]:
    return [
        job for event in events for job in fan_out(event, int(time.time() * 1000), templates.resolve_version)
    ]


async def run_baseline(
    settings: Settings,
    events: list[dict[str, Any]],
    warmup: list[dict[str, Any]] | None = None,
    on_measure: Callable[[], None] | None = None,
) -> BaselineResult:
    """Every job of ``events`` through the stages' handlers, one at a time, in flow order.
    ``warmup``: jobs run first through the same handlers, untimed and uncounted (the stages'
    caches and connections, Pillow's codecs), as the bench warms the pipeline's processes.
    ``on_measure``: called as the timed jobs begin (the bench reads the services' CPU there)."""
    templates = TemplateStore()
    jobs = _jobs(events, templates)
    stages: dict[str, Stage] = {}
    for name in BASELINE_STAGES:
        stage = _stage_class(name)(StageContext(settings, name))
        await stage.start()
        stages[name] = stage
    loop = _Loop(stages)
    result = BaselineResult(jobs=len(jobs), published=0, elapsed_s=0.0)
    result.cpu_s = dict.fromkeys(BASELINE_STAGES, 0.0)
    result.wall_s = dict.fromkeys(BASELINE_STAGES, 0.0)
    try:
        unmeasured = BaselineResult(jobs=0, published=0, elapsed_s=0.0)
        unmeasured.cpu_s = dict.fromkeys(BASELINE_STAGES, 0.0)
        unmeasured.wall_s = dict.fromkeys(BASELINE_STAGES, 0.0)
        warm_jobs = _jobs(warmup or [], templates)
        for offset, job in enumerate(warm_jobs):
            await loop.run(job, offset, unmeasured)
        result.warmup_jobs, result.warmup_published = len(warm_jobs), unmeasured.published
        if on_measure is not None:
            on_measure()
        started = time.perf_counter()
        for offset, job in enumerate(jobs):
            await loop.run(job, offset, result)
        result.elapsed_s = time.perf_counter() - started
    finally:
        for stage in stages.values():
            await stage.stop()
    return result


class _Loop:
    """One job through the stages' handlers in flow order, its time and CPU added to a result."""

    def __init__(self, stages: dict[str, Stage]) -> None:
        self.stages = stages
        self.serdes = _Serdes()
        self.inputs = {name: next(s for s in STAGES if s.name == name).inputs[0] for name in BASELINE_STAGES}

    async def run(self, job: dict[str, Any], offset: int, result: BaselineResult) -> None:
        serdes, inputs = self.serdes, self.inputs
        topic, value = Topic.JOBS_ACCEPTED, serdes.through(Topic.JOBS_ACCEPTED, job)
        where = "published"
        name_index = 0
        while name_index < len(BASELINE_STAGES):
            name = BASELINE_STAGES[name_index]
            if inputs[name] is not topic:
                raise RuntimeError(f"{name} reads {inputs[name].value}, not {topic.value}")
            record = InputRecord(topic, 0, offset, job["job_id"].encode(), value, b"", [], 0)
            cpu, wall = time.process_time(), time.perf_counter()
            outcome = await _handle(self.stages[name], record)
            result.cpu_s[name] += time.process_time() - cpu
            result.wall_s[name] += time.perf_counter() - wall
            if outcome.dead_letter is not None or not outcome.outputs:
                where = f"stopped at {name}: " + "; ".join(
                    f"{e.state} {e.reason}".strip() for e in outcome.events
                )
                break
            output = outcome.outputs[0]
            topic, value = output.topic, serdes.through(output.topic, output.value)
            # A quality retry goes back to generate, as in the pipeline.
            name_index = (
                BASELINE_STAGES.index("generate") if topic is Topic.GENERATION_REQUESTS else name_index + 1
            )
        result.outcomes[job["job_id"]] = where
        result.published += where == "published"
