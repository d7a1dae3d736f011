"""The generate stage as a Kafka share group (generation.consumption=share, KIP-932), on the real
broker: six workers share a three-partition generation.requests, one is SIGKILLed with a batch in
hand; its records come back to the others (delivery count 2), every job completes, and none is
published twice although the killed worker's outputs may have been produced already."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import AcknowledgeType, Consumer, Producer

from deploy.local.session import PipelineSession, expected_job_ids, free_port
from deploy.local.stack import LocalStack
from deploy.local.supervisor import Supervisor, all_stages
from gateway.harness.chaos.evidence import published
from gpu_workers.worker import GenerateStage
from processors.config import Settings
from processors.kafka_clients import group_id_for, make_share_consumer, prepare_share_group
from processors.runtime.codec import Codec
from processors.runtime.dlq import parse_headers
from processors.runtime.runner import StageRunner
from processors.runtime.stage import StageContext
from processors.storage import ObjectStore
from schemas.topics import Topic, TopicNames
from tests.integration.test_generate_poison import _job
from tests.support.catalog import events_for
from tests.support.topics import read_topic

pytestmark = pytest.mark.integration

WORKERS = 6
# Small polls spread the records over the workers (a poll of 32 would take them all).
WORKER_BATCH = 4


def _share_lines(log_file: Path) -> list[str]:
    """The share feed's debug lines of one worker, oldest first."""
    if not log_file.is_file():
        return []
    lines = []
    for raw in log_file.read_text(errors="replace").splitlines():
        if "acquired" not in raw and "acknowledged" not in raw:
            continue
        try:
            entry = json.loads(raw)
        except ValueError:
            continue  # a line cut short as the file is read
        if entry.get("logger") == "lightbox.runtime.generate":
            lines.append(str(entry.get("msg", "")))
    return lines


def _kill_one_mid_batch(workers: Supervisor, killed: list[Any], stop: threading.Event) -> None:
    """SIGKILL the first worker seen holding records it has not acknowledged."""
    while not stop.wait(0.02):
        for child in workers.children:
            lines = _share_lines(child.log_file)
            if lines and lines[-1].startswith("acquired") and child.process and child.process.poll() is None:
                child.process.send_signal(signal.SIGKILL)
                killed.append(child)
                return


DIE_BEFORE_ACK = Path(__file__).resolve().parents[1] / "support" / "die_before_ack"


@contextlib.contextmanager
def _share_session(stack_settings: Settings, tmp_path: Path, worker_env: dict[str, str]):  # type: ignore[no-untyped-def]
    query_port = free_port()
    env = {
        "LIGHTBOX_CLICKHOUSE__EMBEDDED_PATH": str(tmp_path / "clickhouse"),
        "LIGHTBOX_CLICKHOUSE__QUERY_PORT": str(query_port),
        "LIGHTBOX_STAGE__BACKOFF_INITIAL_S": "0.05",
        "LIGHTBOX_GENERATION__CONSUMPTION": "share",
    }
    settings = stack_settings.model_copy(
        update={
            "clickhouse": stack_settings.clickhouse.model_copy(
                update={"embedded_path": str(tmp_path / "clickhouse"), "query_port": query_port}
            ),
        }
    )
    others = [stage for stage in all_stages() if stage != "generate"]
    session = PipelineSession(settings, prefix=f"share-{uuid.uuid4().hex[:8]}.", env=env, stages=others)
    session.start(start_stack=False)
    # The workers apart, so that nothing restarts the one killed: its records must reach the
    # five others through the share group alone.
    workers = Supervisor(
        ["generate"],
        session.log_dir,
        env={
            **session.env,
            "LIGHTBOX_STAGE__BATCH_SIZE": str(WORKER_BATCH),
            # A share poll brings at most generation.max_batch records.
            "LIGHTBOX_GENERATION__MAX_BATCH": str(WORKER_BATCH),
            "LIGHTBOX_LOG_LEVEL": "DEBUG",
            **worker_env,
        },
        copies=WORKERS,
    )
    workers.start()
    try:
        yield session, workers
    finally:
        workers.stop()
        session.stop()


@pytest.fixture
def share_session(stack_settings: Settings, tmp_path: Path):  # type: ignore[no-untyped-def]
    with _share_session(stack_settings, tmp_path, {}) as running:
        yield running


def _submit_sixteen(session: PipelineSession, catalog_server: Any) -> set[str]:
    assert session.settings.kafka.partitions == 3
    events = events_for(
        catalog_server,
        [0, 1, 2, 3],
        f"share-{uuid.uuid4().hex[:6]}",
        channels=("web", "social"),
        locales=("en-US", "de-DE"),
    )
    job_ids = expected_job_ids(events)
    assert len(job_ids) == 16
    session.submit(events)
    return job_ids


def _each_published_once(session: PipelineSession, job_ids: set[str], states: dict[str, str]) -> None:
    assert {states.get(j) for j in job_ids} == {"published"}, states
    counts, _ = published(session.settings)
    assert {j: counts.get(j, 0) for j in job_ids} == dict.fromkeys(job_ids, 1)


def test_share_group_worker_killed_mid_batch_every_job_once(share_session, catalog_server) -> None:
    session, workers = share_session
    killed: list[Any] = []
    stop = threading.Event()
    killer = threading.Thread(target=_kill_one_mid_batch, args=(workers, killed, stop), daemon=True)
    killer.start()
    job_ids = _submit_sixteen(session, catalog_server)
    try:
        states = session.wait_for(job_ids, timeout_s=300)
    finally:
        stop.set()
        killer.join(timeout=10)

    assert killed, "no worker was ever seen with a batch in hand"
    victim = killed[0]
    assert victim.process.wait(timeout=10) == -signal.SIGKILL
    # It died holding records: its last word is an acquisition, never acknowledged.
    assert _share_lines(victim.log_file)[-1].startswith("acquired")
    # Several workers took part, and the victim's records came back to the others.
    busy = [
        c
        for c in workers.children
        if any(line.startswith("acknowledged") for line in _share_lines(c.log_file))
    ]
    assert len(busy) >= 2, [c.name for c in busy]
    survivors = [c for c in workers.children if c is not victim]
    assert all(c.process.poll() is None for c in survivors)
    redelivered = sum(c.log_file.read_text().count("redelivered record") for c in survivors)
    assert redelivered >= 1, "the killed worker's records were never handed to another worker"

    _each_published_once(session, job_ids, states)

    # Lag is measured by committed offsets, which a share group has none of: generate is left
    # out (not shown with the whole topic as its lag), the other stages are there and caught up.
    from gateway.ops.lag import stage_lags

    shared = session.settings.model_copy(
        update={"generation": session.settings.generation.model_copy(update={"consumption": "share"})}
    )
    lags = stage_lags(shared)
    assert "generate" not in {lag.stage for lag in lags}
    assert {"quality", "publish"} <= {lag.stage for lag in lags}


def test_share_group_worker_killed_after_delivering_before_acknowledging(
    stack_settings: Settings, tmp_path: Path, catalog_server: Any
) -> None:
    """The other side of the kill: a worker whose outputs are on generation.results dies before
    its acknowledgement reaches the broker. Another worker generates those records again, and
    downstream's de-duplication still publishes each job once."""
    marker = tmp_path / "died-before-ack"
    worker_env = {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(DIE_BEFORE_ACK), os.environ.get("PYTHONPATH")])),
        "LIGHTBOX_TEST_DIE_BEFORE_ACK": str(marker),
    }
    with _share_session(stack_settings, tmp_path, worker_env) as (session, workers):
        job_ids = _submit_sixteen(session, catalog_server)
        states = session.wait_for(job_ids, timeout_s=300)

        assert marker.is_file(), "no worker reached an acknowledgement"
        pid, *offsets = marker.read_text().split()
        (victim,) = [c for c in workers.children if c.process and c.process.pid == int(pid)]
        assert victim.process.wait(timeout=10) == -signal.SIGKILL
        # It died after delivering: its outputs were produced, its last word is not an ack.
        assert not any(line.startswith("acknowledged") for line in _share_lines(victim.log_file)[-1:])
        survivors = [c for c in workers.children if c is not victim]
        assert all(c.process.poll() is None for c in survivors)
        # Each record it held came back to another worker (delivery 2) and was done again.
        logs = "".join(c.log_file.read_text() for c in survivors)
        held: set[tuple[int, int]] = set()
        for where in offsets:
            topic, rest = where.rsplit("/", 1)
            partition, offset = rest.split("@")
            held.add((int(partition), int(offset)))
            assert f"redelivered record {topic}/{partition}@{offset} (delivery 2)" in logs, where
        _each_published_once(session, job_ids, states)
        # Twice generated, once published: generation.results holds both copies of each attempt
        # the victim had delivered.
        codec = Codec.of(session.settings)
        attempts = {
            (v["job_id"], v["attempt"])
            for m in read_topic(session.settings, Topic.GENERATION_REQUESTS)
            if (m.partition(), m.offset()) in held
            for v in [codec.decode(m).value]
        }
        assert len(attempts) == len(held)
        results: dict[tuple[str, int], int] = dict.fromkeys(attempts, 0)
        for message in read_topic(session.settings, Topic.GENERATION_RESULTS):
            value = codec.decode(message).value
            if (value["job_id"], value["attempt"]) in results:
                results[value["job_id"], value["attempt"]] += 1
        assert all(count >= 2 for count in results.values()), results


async def test_a_record_handed_over_too_often_is_dead_lettered_unprocessed(stack_settings) -> None:
    """A record whose workers keep dying on it comes back with a higher delivery count each time;
    past generation.share_max_deliveries the worker dead-letters it instead of generating it."""
    prefix = f"sharedl-{uuid.uuid4().hex[:6]}."
    settings = stack_settings.model_copy(
        update={
            "kafka": stack_settings.kafka.model_copy(update={"topic_prefix": prefix}),
            "generation": stack_settings.generation.model_copy(
                update={"consumption": "share", "share_max_deliveries": 2}
            ),
        }
    )
    stack = LocalStack(settings, progress=lambda _: None)
    stack.ensure_topics()
    stack.ensure_schemas()
    names, codec = TopicNames(prefix), Codec.of(settings)
    doomed = _job(ObjectStore(settings.storage), "20")
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap})
    producer.produce(
        names(Topic.GENERATION_REQUESTS),
        key=doomed["job_id"].encode(),
        value=codec.serde(Topic.GENERATION_REQUESTS).encode(doomed),
    )
    producer.flush(10)

    # Two workers that "die" on it: each takes it and gives it back unprocessed (a RELEASE counts
    # a delivery as a lock that runs out does, without waiting 30 s for it).
    group = group_id_for(settings, "generate")
    prepare_share_group(settings, group)
    member = make_share_consumer(settings, group)
    member.subscribe([names(Topic.GENERATION_REQUESTS)])
    counts: list[int] = []
    deadline = time.monotonic() + 60
    while len(counts) < 2 and time.monotonic() < deadline:
        for message in member.poll(1.0):
            if message.error() is None:
                counts.append(message.delivery_count())
                member.acknowledge(message, AcknowledgeType.RELEASE)
        member.commit_sync(10)
    member.close()
    assert counts == [1, 2]

    runner = StageRunner(GenerateStage(StageContext(settings, "generate")))
    assert runner.shared and not runner.exactly_once
    task = asyncio.create_task(runner.run())
    reader = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap,
            "group.id": f"t-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
        }
    )
    reader.subscribe([names(Topic.GENERATION_RESULTS), names(Topic.PIPELINE_DLQ)])
    seen: dict[str, dict[str, str]] = {}
    deadline = time.monotonic() + 60
    try:
        while not seen and time.monotonic() < deadline:
            message = await asyncio.to_thread(reader.poll, 0.5)
            if message is None or message.error():
                continue
            seen[message.topic()] = parse_headers(message.headers() or [])
    finally:
        reader.close()
        runner.request_stop()
        await task
    assert list(seen) == [names(Topic.PIPELINE_DLQ)], "dead-lettered, never generated"
    letter = seen[names(Topic.PIPELINE_DLQ)]
    assert letter["stage"] == "generate"
    assert letter["error.class"] == "RedeliveredTooOften"
    assert letter["attempts"] == "3"
