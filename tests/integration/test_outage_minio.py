"""Outages pause, they do not dead-letter, on the real broker and a real MinIO: the real publish
stage under the real StageRunner has its storage frozen (SIGSTOP) while it handles a batch, and
thawed (SIGCONT) a while later. Meanwhile the stage holds its partitions and stays in its group
with `retry` events out for the waiting jobs; afterwards every job is published once and nothing
is in pipeline.dlq.

The MinIO is a private one (the stack's binary on its own ports and data directory): freezing the
shared one would stall every other test running against the stack.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import os
import signal
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3
from confluent_kafka import Consumer, TopicPartition
from minio import Minio

from deploy.local.session import free_port
from deploy.local.stack import LocalStack
from processors.config import Settings
from processors.kafka_clients import group_id_for, make_producer, produce_and_confirm
from processors.runtime.codec import Codec
from processors.runtime.runner import StageRunner
from processors.runtime.stage import StageContext
from processors.stages.publish import PublishStage
from processors.storage import ObjectStore
from schemas.topics import Topic, TopicNames
from tests.fixtures.avro_samples import JOB_V1
from tests.support.topics import read_topic

pytestmark = pytest.mark.integration


@pytest.fixture
def private_minio(stack_settings: Settings, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    binary = stack_settings.cache_dir / f"minio-{stack_settings.storage.minio_version}" / "bin" / "minio"
    # `lightbox stack up` (run by make test before the suite) builds it: missing is a failure.
    assert binary.is_file(), f"no MinIO binary at {binary}: run `lightbox stack up`"
    port, console = free_port(), free_port()
    env = {
        **os.environ,
        "MINIO_ROOT_USER": stack_settings.storage.access_key,
        "MINIO_ROOT_PASSWORD": stack_settings.storage.secret_key,
        "MINIO_UPDATE": "off",
    }
    process = subprocess.Popen(
        [
            str(binary),
            "server",
            str(tmp_path / "data"),
            "--address",
            f"127.0.0.1:{port}",
            "--console-address",
            f"127.0.0.1:{console}",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + 60
    while True:
        try:
            with opener.open(f"http://127.0.0.1:{port}/minio/health/live", timeout=1) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        assert time.monotonic() < deadline, "the private MinIO did not start"
        time.sleep(0.2)
    try:
        yield process, f"127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGCONT)
        process.terminate()
        process.wait(15)


def _store(settings: Settings) -> ObjectStore:
    """Short timeouts and no SDK retries: a frozen MinIO fails calls in seconds, not minutes."""
    storage = settings.storage
    http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=1, read=2), retries=False)
    client = Minio(
        storage.endpoint,
        access_key=storage.access_key,
        secret_key=storage.secret_key,
        secure=False,
        http_client=http,
    )
    return ObjectStore(storage, client=client)


def _ready_job(store: ObjectStore) -> dict[str, Any]:
    job = copy.deepcopy(JOB_V1)
    job["job_id"] = f"frozen-{uuid.uuid4().hex[:10]}"
    job["product"]["sku"] = f"SKU-FRZ-{uuid.uuid4().hex[:6]}"
    job["quality"] = {"passed": True, "scores": {"overall": 0.9}, "reasons": [], "chosen_index": 0}
    key = f"tests/derivatives/{job['job_id']}/hero.png"
    store.put_bytes(key, b"png", "image/png")
    job["derivatives"] = [
        {
            "name": "hero",
            "key": key,
            "width": 8,
            "height": 8,
            "format": "png",
            "sha256": hashlib.sha256(b"png").hexdigest(),
        }
    ]
    return job


def _committed(settings: Settings) -> int:
    name = TopicNames(settings.kafka.topic_prefix)(Topic.ASSETS_READY)
    consumer = Consumer(
        {"bootstrap.servers": settings.kafka.bootstrap, "group.id": group_id_for(settings, "publish")}
    )
    try:
        (tp,) = consumer.committed([TopicPartition(name, 0)], timeout=10)
        return int(tp.offset)
    finally:
        consumer.close()


async def _until(task: asyncio.Task[None], condition: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not await asyncio.to_thread(condition):
        assert not task.done(), f"the stage stopped: {task.exception() if task.done() else ''}"
        assert time.monotonic() < deadline, "not reached in time"
        await asyncio.sleep(0.2)


async def test_a_frozen_minio_pauses_the_stage_and_nothing_is_dead_lettered(
    stack_settings, private_minio
) -> None:
    process, endpoint = private_minio
    tag = uuid.uuid4().hex[:8]
    settings = stack_settings.model_copy(
        update={
            "kafka": stack_settings.kafka.model_copy(
                update={"topic_prefix": f"test-frz-{tag}.", "partitions": 1}
            ),
            "storage": stack_settings.storage.model_copy(update={"endpoint": endpoint}),
            # The derivatives here are stand-in bytes, not images: there is nothing to sign.
            "provenance": stack_settings.provenance.model_copy(update={"sign": False}),
            "review": stack_settings.review.model_copy(
                update={"policy": "auto", "publish_prefix": f"published-{tag}/"}
            ),
            "stage": stack_settings.stage.model_copy(
                update={
                    "max_attempts": 2,
                    "backoff_initial_s": 0.2,
                    "backoff_max_s": 1.0,
                    "keepalive_after_s": 2.0,
                }
            ),
        }
    )
    stack = LocalStack(settings, progress=lambda _: None)
    stack.ensure_topics()
    stack.ensure_schemas()  # the prefix's subjects: every topic is registry-framed
    store = _store(settings)
    store.ensure_bucket()
    ready = TopicNames(settings.kafka.topic_prefix)(Topic.ASSETS_READY)
    codec = Codec.of(settings)
    jobs = codec.serde(Topic.ASSETS_READY)
    first, *frozen = [_ready_job(store) for _ in range(4)]

    stage = PublishStage(StageContext(settings, "publish"))
    stage.ctx.store = store  # type: ignore[misc]
    runner = StageRunner(stage)
    task = asyncio.create_task(runner.run())
    producer = make_producer(settings)
    try:
        produce_and_confirm(producer, [(ready, first["job_id"].encode(), jobs.encode(first), None)])
        await _until(task, lambda: _committed(settings) == 1, 60)

        process.send_signal(signal.SIGSTOP)
        frozen_at = time.monotonic()
        try:
            produce_and_confirm(
                producer, [(ready, j["job_id"].encode(), jobs.encode(j), None) for j in frozen]
            )
            # Held: the partition paused while the batch waits, far past max_attempts rounds.
            await _until(task, lambda: runner.metrics.held.labels("publish")._value.get() == 1, 60)
            await asyncio.sleep(8)
            assert _committed(settings) == 1, "nothing committed while storage is down"
            assert runner.consumer.assignment(), "still in the group"
        finally:
            process.send_signal(signal.SIGCONT)
        thawed_after = time.monotonic() - frozen_at

        await _until(task, lambda: _committed(settings) == 4, 90)
        # Resumed by itself (the hold ends right after the batch's commit).
        await _until(task, lambda: runner.metrics.held.labels("publish")._value.get() == 0, 10)
        assert not runner.feed.paused
    finally:
        runner.request_stop()
        await asyncio.wait_for(task, timeout=30)

    assert thawed_after > 8
    assert read_topic(settings, Topic.PIPELINE_DLQ) == [], "an outage is not poison"
    published = sorted(
        codec.serde(Topic.ASSETS_PUBLISHED).decode(m.value())["job_id"]
        for m in read_topic(settings, Topic.ASSETS_PUBLISHED)
    )
    assert published == sorted(j["job_id"] for j in [first, *frozen]), "every job published, once"
    events = [
        codec.serde(Topic.PIPELINE_EVENTS).decode(m.value())
        for m in read_topic(settings, Topic.PIPELINE_EVENTS)
    ]
    retried = {
        e["job_id"] for e in events if e["state"] == "retry" and e["attributes"].get("fault") == "dependency"
    }
    assert retried and retried <= {j["job_id"] for j in frozen}, "the waiting jobs said why they waited"
    assert runner.metrics.outages.labels("publish")._value.get() >= 1
