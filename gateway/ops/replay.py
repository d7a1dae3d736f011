"""Replay one job from any stage, optionally with another model.

Every pipeline event records the input message it came from (``source`` = topic/partition/offset),
so the exact record a stage saw is found in the event log and re-read from Kafka. Which of a
stage's inputs carries the job comes from the topology (processors/topology.py): the publish stage
also reads review decisions, and a decision is not a job to replay. The replay is a new job (its
own id, ``replay_of`` naming the original), so the original assets stay as they are.

Overrides (``--set key=value``) change what the stage sees: OVERRIDES names each key, the stages
it means something at and how its value is checked. Jobs are named one by one or selected from
the event log by a condition (select_jobs), through the analyst's read-only path.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from gateway.ops.entry import EntryError, check_id
from processors.config import Settings
from processors.eventlog.clickhouse import EVENTS_TABLE
from processors.eventlog.reader import EventLogReader
from processors.kafka_clients import DeliveryFailed, make_producer, produce_and_confirm
from processors.runtime.codec import Codec
from processors.topology import JOB_STAGES, UnknownStage, job_input, stage_spec
from schemas.topics import Topic, TopicNames

REPLAY_NAMESPACE = uuid.UUID("0b6c1f0e-7d55-4c8a-a0a4-7c9d8f3a2e61")


# The generation backends a route may name (gpu_workers/registry.py BACKENDS: the CLI may not
# import the generator's package, so the names are repeated here and a unit test ties the two).
BACKENDS = frozenset({"diffusers", "remote", "compositor"})
MAX_WHERE_JOBS = 1000


class ReplayError(RuntimeError):
    pass


class OverrideError(ReplayError):
    """An override the user got wrong (unknown key, bad value, wrong stage): a usage error."""


def _route(job: dict[str, Any], key: str) -> dict[str, Any]:
    if not job.get("route"):
        raise OverrideError(f"{key} needs a job that has been routed: replay from generate")
    route = dict(job["route"])
    if not route["rule_id"].startswith("replay-override:"):
        route["rule_id"] = f"replay-override:{route['rule_id']}"
    job["route"] = route
    return route


def _set_model(job: dict[str, Any], value: str) -> None:
    _route(job, "model")["model"] = value


def _set_backend(job: dict[str, Any], value: str) -> None:
    if value not in BACKENDS:
        raise OverrideError(f"backend {value!r} is not one of {', '.join(sorted(BACKENDS))}")
    _route(job, "backend")["backend"] = value


def _set_seed(job: dict[str, Any], value: str) -> None:
    if not value.isdigit() or int(value) >= 2**63:
        raise OverrideError(f"seed {value!r} is not a whole number from 0 to 2^63-1")
    route = _route(job, "seed")
    route["params"] = {**route.get("params", {}), "seed": str(int(value))}


def _set_template_version(job: dict[str, Any], value: str) -> None:
    from processors.prompting.store import TemplateStore

    template_id = job["spec"]["template_id"]
    store = TemplateStore()
    if not store.has_version(template_id, value):
        known = ", ".join(store.versions(template_id)) if store.has(template_id) else "none"
        raise OverrideError(f"template {template_id} has no version {value!r} (known: {known})")
    job["spec"] = {**job["spec"], "template_version": value}


@dataclass(frozen=True)
class Override:
    stages: tuple[str, ...]  # where the key means something: later the job has moved past it
    apply: Callable[[dict[str, Any], str], None]


OVERRIDES: dict[str, Override] = {
    "model": Override(("generate",), _set_model),
    "backend": Override(("generate",), _set_backend),
    "seed": Override(("generate",), _set_seed),
    # The prompt stage renders the template: before it, the version can still change.
    "template_version": Override(("references", "prompt"), _set_template_version),
}


def parse_overrides(pairs: list[str], stage: str) -> dict[str, str]:
    """`key=value` pairs, checked against OVERRIDES and the stage (values are checked on the job)."""
    overrides: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not value.strip():
            raise OverrideError(f"--set {pair!r}: expected key=value")
        if key not in OVERRIDES:
            raise OverrideError(f"--set {key}: unknown key; one of {', '.join(OVERRIDES)}")
        if stage not in OVERRIDES[key].stages:
            raise OverrideError(
                f"--set {key} means nothing when replaying from {stage}: "
                f"replay from {' or '.join(OVERRIDES[key].stages)}"
            )
        if key in ("model", "backend"):
            try:
                check_id(value.strip(), key)
            except EntryError as exc:
                raise OverrideError(f"--set {key}: {exc.detail}") from None
        overrides[key] = value.strip()
    return overrides


def _read_at(settings: Settings, topic: str, partition: int, offset: int) -> bytes:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap,
            "group.id": "lightbox.replay-tool",
            "enable.auto.commit": False,
            # Only what the stages themselves saw (librdkafka's default, said aloud).
            "isolation.level": "read_committed",
        }
    )
    try:
        consumer.assign([TopicPartition(topic, partition, offset)])
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            message = consumer.poll(1.0)
            if message is None or message.error():
                continue
            if message.offset() == offset:
                return message.value()
            break
        raise ReplayError(f"{topic}/{partition}/{offset} is no longer in Kafka (retention?)")
    finally:
        consumer.close()


def rewrite_for_replay(
    job: dict[str, Any],
    model: str | None,
    backend: str | None,
    now_ms: int,
    overrides: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The job as a new job replaying it, with model/backend (the HTTP API's options) and the
    OVERRIDES applied; the original is left as it is."""
    replayed = dict(job)
    replayed["replay_of"] = job["job_id"]
    replayed["job_id"] = str(uuid.uuid5(REPLAY_NAMESPACE, f"{job['job_id']}|{now_ms}"))
    replayed["submitted_at"] = now_ms
    changes = {**({"model": model} if model else {}), **({"backend": backend} if backend else {})}
    changes.update(overrides or {})
    for key, value in changes.items():
        OVERRIDES[key].apply(replayed, value)
    return replayed


def replay_source(timeline: dict[str, Any], from_stage: str) -> tuple[Topic, int, int]:
    """The job record the stage last read for this job: (topic, partition, offset), from the
    stage's events whose source is the stage's job input."""
    try:
        topic = job_input(stage_spec(from_stage))
    except UnknownStage as exc:
        raise ReplayError(str(exc)) from None
    if topic is None:
        raise ReplayError(
            f"stage {from_stage} does not read jobs; replay from one of: {', '.join(JOB_STAGES)}"
        )
    sources = []
    for event in timeline["events"]:
        source = (event.get("attributes") or {}).get("source") or ""
        logical, _, position = source.partition("/")
        if event["stage"] == from_stage and logical == topic.value and position:
            partition, _, offset = position.partition("/")
            sources.append((topic, int(partition), int(offset)))
    if not sources:
        job_id = timeline.get("job_id", "?")
        raise ReplayError(f"job {job_id} never reached stage {from_stage} (see `lightbox status {job_id}`)")
    return sources[-1]


@dataclass
class Planned:
    """One job's replay: where its input was, the new job, and what the overrides changed."""

    job_id: str
    source: str  # topic/partition/offset of the record re-read
    topic: str  # where the new job goes (broker name)
    new_job_id: str
    changed: dict[str, tuple[Any, Any]]  # parameter -> (before, after)
    record: dict[str, Any]


async def plan_replay(
    settings: Settings,
    job_id: str,
    from_stage: str,
    model: str | None = None,
    backend: str | None = None,
    overrides: Mapping[str, str] | None = None,
) -> Planned:
    """Everything short of sending: the record re-read from Kafka and rewritten."""
    from gateway.ops.compare import changes, parameters

    timeline = await EventLogReader(settings).timeline(job_id)
    topic, partition, offset = replay_source(timeline, from_stage)
    names = TopicNames(settings.kafka.topic_prefix)
    serde = Codec.of(settings).serde(topic)
    job = serde.decode(_read_at(settings, names(topic), partition, offset))
    replayed = rewrite_for_replay(job, model, backend, int(time.time() * 1000), overrides)
    changed = {c["name"]: (c["a"], c["b"]) for c in changes(parameters(job), parameters(replayed))}
    changed.pop("job_id", None)
    changed.pop("replay_of", None)
    return Planned(
        job_id, f"{topic.value}/{partition}/{offset}", names(topic), replayed["job_id"], changed, replayed
    )


def send(settings: Settings, planned: list[Planned]) -> None:
    if not planned:
        return
    topic = TopicNames(settings.kafka.topic_prefix).logical(planned[0].topic)
    serde = Codec.of(settings).serde(topic)
    messages = [(p.topic, p.new_job_id.encode(), serde.encode(p.record), None) for p in planned]
    try:
        produce_and_confirm(make_producer(settings), messages)
    except DeliveryFailed as exc:
        raise ReplayError(f"the replayed job(s) could not be delivered to Kafka: {exc}") from exc


async def replay_job(
    settings: Settings,
    job_id: str,
    from_stage: str,
    model: str | None = None,
    backend: str | None = None,
    overrides: Mapping[str, str] | None = None,
) -> tuple[str, str]:
    planned = await plan_replay(settings, job_id, from_stage, model, backend, overrides)
    send(settings, [planned])
    return planned.topic, planned.new_job_id


def where_query(settings: Settings, condition: str, limit: int = MAX_WHERE_JOBS) -> str:
    """The job-selecting statement for a condition on the events table; refused with a `;` (one
    statement, the condition only) or empty. The analyst path checks the rest (read-only,
    functions, limits)."""
    condition = condition.strip()
    if not condition:
        raise OverrideError("--where needs a condition, e.g. \"stage = 'quality' AND state = 'failed'\"")
    if ";" in condition:
        raise OverrideError("--where is one condition: no ';'")
    if not 0 < limit <= MAX_WHERE_JOBS:
        raise OverrideError(f"--limit must be from 1 to {MAX_WHERE_JOBS}")
    table = f"{settings.clickhouse.database}.{EVENTS_TABLE}"
    return f"SELECT DISTINCT job_id FROM {table} WHERE ({condition}) ORDER BY job_id LIMIT {int(limit)}"


async def select_jobs(settings: Settings, condition: str, limit: int = MAX_WHERE_JOBS) -> list[str]:
    """Job ids matching a condition on the event log, through the analyst's read-only path
    (processors/eventlog/analyst.py); raises the reader's EventLogError when refused."""
    result = await EventLogReader(settings).sql(where_query(settings, condition, limit))
    return [str(row[0]) for row in result["rows"]]
