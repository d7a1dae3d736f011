"""One classification rule for every stage (processors/storage.classify_storage_error): storage
unavailable (MinIO frozen with SIGSTOP, a refused connection) is transient, so generate, quality,
postprocess and publish raise and are retried, and nothing is dead-lettered; a missing object is
permanent: the job fails with its reason and is dead-lettered. A whole batch the worker must
retry (storage down, every backend down) is a `retry` event for every job in it.

The MinIO that is frozen here is a private one (its own home, data and ports, started through
deploy/local like the stack's), so freezing it disturbs nobody else using the shared stack."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer
from PIL import Image

from deploy.local.minio import MinioService
from deploy.local.session import free_port
from deploy.local.stack import LocalStack
from gpu_workers.batch_retry import BatchUnavailable
from gpu_workers.outputs import OutputWriter, encode_png
from gpu_workers.worker import GenerateStage
from processors.config import Settings
from processors.runtime import InputRecord, StageContext, TransientError
from processors.runtime.codec import Codec
from processors.runtime.runner import StageRunner
from processors.stages.publish import PublishStage
from processors.stages.quality import QualityStage
from processors.storage import (
    ObjectMissing,
    ObjectStore,
    StorageUnavailable,
    storage_errors,
)
from schemas.topics import Topic, TopicNames
from tests.integration.test_generate_duplicates import generation_request, stored_product
from tests.integration.test_publish_webhooks_and_decisions import _ready_job
from tests.ml.remote_api import InferenceAPI

pytestmark = pytest.mark.integration

# Longer than a read can wait on a frozen MinIO (storage.READ_TIMEOUT_S, tried twice), so
# every freeze below is seen as an outage rather than a slow answer.
FREEZE_S = 13.0


@pytest.fixture(scope="module")
def private_minio(stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    home: Path = tmp_path_factory.mktemp("private-minio")
    (home / "cache").symlink_to(stack_settings.cache_dir)  # the built binary, not built again
    settings = stack_settings.model_copy(
        update={
            "home": home,
            "storage": stack_settings.storage.model_copy(
                update={"endpoint": f"127.0.0.1:{free_port()}", "console_port": free_port()}
            ),
        }
    )
    service = MinioService(settings, progress=lambda _: None)
    since = service.start()
    service.wait_ready(time.monotonic() + 60, since)
    ObjectStore(settings.storage).ensure_bucket()
    service.settings = settings
    try:
        yield service
    finally:
        pid = service.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        service.stop()


@contextlib.contextmanager
def frozen(service: MinioService) -> Iterator[None]:
    pid = service.pid()
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def _record(topic: Topic, job: dict[str, Any], offset: int = 0) -> InputRecord:
    value = copy.deepcopy(job)
    return InputRecord(topic, 0, offset, job["job_id"].encode(), value, b"", [], int(time.time() * 1000))


async def test_real_failures_are_classified(private_minio: MinioService, stack_settings: Settings) -> None:
    store = ObjectStore(private_minio.settings.storage)
    with pytest.raises(ObjectMissing), storage_errors():
        await asyncio.to_thread(store.get_bytes, f"tests/{uuid.uuid4().hex}")

    refused = ObjectStore(stack_settings.storage.model_copy(update={"endpoint": f"127.0.0.1:{free_port()}"}))
    with pytest.raises(StorageUnavailable, match="unreachable"), storage_errors():
        await asyncio.to_thread(refused.get_bytes, "any")

    await asyncio.to_thread(store.put_bytes, "tests/there", b"x")
    started = time.monotonic()
    with frozen(private_minio), pytest.raises(StorageUnavailable), storage_errors():
        await asyncio.to_thread(store.get_bytes, "tests/there")
    assert time.monotonic() - started < 20, "an outage is noticed in seconds, not minutes"


async def test_missing_objects_fail_each_stage_with_its_reason(
    store: ObjectStore, stack_settings: Settings
) -> None:
    settings = stack_settings.model_copy(
        update={
            "kafka": stack_settings.kafka.model_copy(update={"topic_prefix": f"ec-{uuid.uuid4().hex[:6]}."})
        }
    )
    generate = GenerateStage(StageContext(settings, "generate"))
    quality = QualityStage(StageContext(settings, "quality"))
    publish = PublishStage(StageContext(settings, "publish"))
    for stage in (generate, quality, publish):
        await stage.start()
    try:
        ref = await asyncio.to_thread(stored_product, store)
        good = generation_request(ref, "a cube", backend="compositor")
        lost = generation_request(
            {**ref, "key": f"refs/sha256/00/{uuid.uuid4().hex}.png"}, "a cube", "compositor"
        )
        outcomes = await generate.handle_batch(
            [_record(Topic.GENERATION_REQUESTS, j, i) for i, j in enumerate([good, lost])]
        )
        await asyncio.gather(*(e for o in outcomes for e in o.effects))
        assert outcomes[0].dead_letter is None and outcomes[0].outputs, "the good request completes"
        assert isinstance(outcomes[1].dead_letter, ObjectMissing)
        assert [(e.state, e.reason) for e in outcomes[1].events] == [("failed", "missing_source_file")]

        result = outcomes[0].outputs[0].value
        gone = copy.deepcopy(result)
        gone["generation"]["output_keys"] = [result["generation"]["output_keys"][0].replace("/v0/", "/v9/")]
        scored = await quality.handle(_record(Topic.GENERATION_RESULTS, gone))
        assert isinstance(scored.dead_letter, ObjectMissing)
        assert [(e.state, e.reason) for e in scored.events] == [("failed", "missing_source_file")]

        from processors.stages.postprocess import PostprocessStage

        postprocess = PostprocessStage(StageContext(settings, "postprocess"))
        gone["asset_key"] = gone["generation"]["output_keys"][0]
        rendered = await postprocess.handle(_record(Topic.ASSETS_SCORED, gone))
        assert isinstance(rendered.dead_letter, ObjectMissing)
        assert [(e.state, e.reason) for e in rendered.events] == [("failed", "missing_source_file")]

        ready = await asyncio.to_thread(_ready_job, store)
        ready["derivatives"][0]["key"] = f"tests/derivatives/{uuid.uuid4().hex}/gone.png"
        published = await publish.handle(_record(Topic.ASSETS_READY, ready))
        assert isinstance(published.dead_letter, ObjectMissing) and not published.outputs
        assert [(e.state, e.reason) for e in published.events] == [("failed", "missing_source_file")]
    finally:
        for stage in (generate, quality, publish):
            await stage.stop()


async def test_a_frozen_minio_is_transient_for_every_stage(private_minio: MinioService) -> None:
    settings = private_minio.settings
    store = ObjectStore(settings.storage)
    ref = await asyncio.to_thread(stored_product, store)
    generate = GenerateStage(StageContext(settings, "generate"))
    quality = QualityStage(StageContext(settings, "quality"))
    publish = PublishStage(StageContext(settings, "publish"))
    for stage in (generate, quality, publish):
        await stage.start()
    try:
        request = generation_request(ref, "a cube", backend="compositor")
        (done,) = await generate.handle_batch([_record(Topic.GENERATION_REQUESTS, request)])
        await asyncio.gather(*done.effects)
        result = done.outputs[0].value
        scored = {**copy.deepcopy(result), "asset_key": result["generation"]["output_keys"][0]}
        ready = await asyncio.to_thread(_ready_job, store)
        fresh = generation_request(
            await asyncio.to_thread(stored_product, store), "a cube", backend="compositor"
        )

        from processors.stages.postprocess import PostprocessStage

        postprocess = PostprocessStage(StageContext(settings, "postprocess"))
        # The worker's uploads (effects, after the batch) are classified the same way; one try
        # here, so the test does not wait out the stage's backoff.
        writer = OutputWriter(store, settings.stage.model_copy(update={"max_attempts": 1}))
        image = encode_png(Image.new("RGB", (8, 8), (1, 2, 3)))
        with frozen(private_minio):
            tries = await asyncio.gather(
                generate.handle_batch([_record(Topic.GENERATION_REQUESTS, fresh)]),
                quality.handle(_record(Topic.GENERATION_RESULTS, result)),
                postprocess.handle(_record(Topic.ASSETS_SCORED, scored)),
                publish.handle(_record(Topic.ASSETS_READY, ready)),
                writer.upload(f"tests/frozen/{uuid.uuid4().hex}.png", image, {}),
                return_exceptions=True,
            )
            await asyncio.sleep(max(0.0, FREEZE_S - 12))
        names = ("generate", "quality", "postprocess", "publish", "upload")
        for stage_name, outcome in zip(names, tries, strict=True):
            assert isinstance(outcome, TransientError), (stage_name, outcome)
        assert isinstance(tries[4], StorageUnavailable)
        assert isinstance(tries[0], BatchUnavailable) and tries[0].reason == "storage_unavailable"
        assert [(e.job_id, e.state, e.reason) for e in tries[0].events] == [
            (fresh["job_id"], "retry", "storage_unavailable")
        ]
    finally:
        for stage in (generate, quality, publish):
            await stage.stop()


async def test_generate_waits_out_a_frozen_minio_and_loses_nothing(
    private_minio: MinioService, stack_settings: Settings
) -> None:
    """Through the real runner and Kafka: requests read while storage is frozen are retried (a
    `retry` event for each job of the batch), none is dead-lettered, all complete after SIGCONT."""
    settings = private_minio.settings.model_copy(
        update={
            "kafka": stack_settings.kafka.model_copy(
                update={"topic_prefix": f"ecf-{uuid.uuid4().hex[:6]}.", "partitions": 1}
            ),
            # Enough tries to outlast the freeze, whatever the runtime does once they run out.
            "stage": stack_settings.stage.model_copy(
                update={"max_attempts": 40, "backoff_initial_s": 0.2, "backoff_max_s": 1.0}
            ),
        }
    )
    stack = LocalStack(settings, progress=lambda _: None)
    stack.ensure_topics()
    stack.ensure_schemas()  # the prefix's subjects: every topic is registry-framed
    store = ObjectStore(settings.storage)
    jobs = [
        generation_request(await asyncio.to_thread(stored_product, store), "a cube", "compositor")
        for _ in range(2)
    ]
    names, codec = TopicNames(settings.kafka.topic_prefix), Codec.of(settings)
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap,
            "group.id": f"t-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe(
        [names(Topic.GENERATION_RESULTS), names(Topic.PIPELINE_DLQ), names(Topic.PIPELINE_EVENTS)]
    )
    results: set[str] = set()
    letters: list[str] = []
    retries: dict[str, set[str]] = {}
    runner = StageRunner(GenerateStage(StageContext(settings, "generate")))
    task = asyncio.create_task(runner.run())
    try:
        with frozen(private_minio):
            producer = Producer({"bootstrap.servers": settings.kafka.bootstrap})
            for job in jobs:
                producer.produce(
                    names(Topic.GENERATION_REQUESTS),
                    key=job["job_id"].encode(),
                    value=codec.serde(Topic.GENERATION_REQUESTS).encode(job),
                )
            producer.flush(10)
            await asyncio.sleep(FREEZE_S)
        deadline = time.monotonic() + 60
        while len(results) < len(jobs) and time.monotonic() < deadline:
            assert not task.done(), task
            message = await asyncio.to_thread(consumer.poll, 0.5)
            if message is None or message.error():
                continue
            if message.topic() == names(Topic.PIPELINE_DLQ):
                letters.append(message.key().decode())
            elif message.topic() == names(Topic.GENERATION_RESULTS):
                results.add(codec.serde(Topic.GENERATION_RESULTS).decode(message.value())["job_id"])
            else:
                event = codec.serde(Topic.PIPELINE_EVENTS).decode(message.value())
                if event["state"] == "retry":
                    retries.setdefault(event["job_id"], set()).add(event["reason"])
    finally:
        consumer.close()
        runner.request_stop()
        await task
    assert results == {j["job_id"] for j in jobs}, "every request completed after the freeze"
    assert letters == [], "an outage dead-letters nothing"
    assert retries == {j["job_id"]: {"storage_unavailable"} for j in jobs}, "every job of the batch"


async def test_every_job_of_a_batch_gets_a_retry_event_when_every_backend_is_down(
    store: ObjectStore, stack_settings: Settings
) -> None:
    api = InferenceAPI()
    await api.start()
    await api.stop()  # it has a port now, and nobody answers there
    settings = stack_settings.model_copy(
        update={"generation": stack_settings.generation.model_copy(update={"remote_endpoint": api.endpoint})}
    )
    stage = GenerateStage(StageContext(settings, "generate"))
    await stage.start()
    try:
        ref = await asyncio.to_thread(stored_product, store)
        jobs = [generation_request(ref, f"a cube {i}") for i in range(2)]
        jobs.append(generation_request(ref, "a cube", backend="compositor"))  # its group succeeds
        records = [_record(Topic.GENERATION_REQUESTS, job, offset) for offset, job in enumerate(jobs)]
        with pytest.raises(BatchUnavailable) as raised:
            await stage.handle_batch([copy.deepcopy(r) for r in records])
        assert raised.value.reason == "backends_unavailable"
        assert [(e.job_id, e.state, e.reason) for e in raised.value.events] == [
            (job["job_id"], "retry", "backends_unavailable") for job in jobs
        ]
        # The runtime retries the same batch; the API is back (same port) and it succeeds: each
        # job's outcome starts with the retry event it had, so its timeline has no gap.
        await api.start()
        outcomes = await stage.handle_batch([copy.deepcopy(r) for r in records])
        await asyncio.gather(*(e for o in outcomes for e in o.effects))
        for job, outcome in zip(jobs, outcomes, strict=True):
            assert [(e.state, e.reason) for e in outcome.events] == [
                ("retry", "backends_unavailable"),
                ("running", ""),
            ], job["job_id"]
            assert outcome.events[0].discriminator == "batch-try1"
    finally:
        await stage.stop()
        await api.stop()
