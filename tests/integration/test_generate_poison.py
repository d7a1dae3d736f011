"""One unprocessable generation request is dead-lettered with its reason; the rest of its batch
completes (CPU compositor, real Kafka and MinIO)."""

from __future__ import annotations

import asyncio
import copy
import io
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer
from PIL import Image

from deploy.local.stack import LocalStack
from gpu_workers.worker import GenerateStage
from processors import storage_keys
from processors.runtime.codec import Codec
from processors.runtime.dlq import parse_headers
from processors.runtime.runner import StageRunner
from processors.runtime.stage import StageContext
from processors.storage import ObjectStore
from schemas.topics import Topic, TopicNames
from tests.fixtures.avro_samples import JOB_V1

pytestmark = pytest.mark.integration


def _job(store: ObjectStore, steps: str) -> dict:
    image = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    image.paste((30, 90, 200, 255), (10, 10, 30, 30))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    obj, _ = store.put_content_addressed(storage_keys.REFS_PREFIX, buf.getvalue(), "image/png", "png")
    job = copy.deepcopy(JOB_V1)
    job["job_id"] = f"poison-{uuid.uuid4().hex[:8]}"
    job["references"] = [
        {
            "role": "PRODUCT",
            "key": obj.key,
            "sha256": obj.sha256,
            "content_type": "image/png",
            "width": 40,
            "height": 40,
            "size_bytes": obj.size,
            "mask_key": None,
        }
    ]
    job["spec"].update(width=64, height=64)
    job["prompt"] = {
        "template_id": "studio-hero",
        "template_version": "1.0.0",
        "positive": "a cube",
        "negative": "",
        "variables": {},
    }
    job["route"] = {
        "rule_id": "t",
        "rules_version": "1",
        "backend": "compositor",
        "model": "compositor",
        "pool": "cpu",
        "fallbacks": [],
        "params": {"steps": steps},
        "canary": False,
    }
    return job


async def test_bad_request_is_dead_lettered_and_its_batch_completes(stack_settings) -> None:
    prefix = f"gp-{uuid.uuid4().hex[:6]}."
    settings = stack_settings.model_copy(
        update={"kafka": stack_settings.kafka.model_copy(update={"topic_prefix": prefix, "partitions": 1})}
    )
    stack = LocalStack(settings, progress=lambda _: None)
    stack.ensure_topics()
    stack.ensure_schemas()
    store = ObjectStore(settings.storage)
    good = [_job(store, "20") for _ in range(3)]
    bad = _job(store, "fast")  # a rule set steps to something that is not a number
    names, codec = TopicNames(prefix), Codec.of(settings)
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap})
    for job in [good[0], bad, *good[1:]]:
        producer.produce(
            names(Topic.GENERATION_REQUESTS),
            key=job["job_id"].encode(),
            value=codec.serde(Topic.GENERATION_REQUESTS).encode(job),
        )
    producer.flush(10)

    runner = StageRunner(GenerateStage(StageContext(settings, "generate")))
    task = asyncio.create_task(runner.run())
    results, letters = set(), {}
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap,
            "group.id": f"t-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([names(Topic.GENERATION_RESULTS), names(Topic.PIPELINE_DLQ)])
    deadline = time.monotonic() + 60
    try:
        while (len(results) < 3 or not letters) and time.monotonic() < deadline:
            message = await asyncio.to_thread(consumer.poll, 0.5)
            if message is None or message.error():
                continue
            if message.topic() == names(Topic.PIPELINE_DLQ):
                letters[message.key().decode()] = parse_headers(message.headers())
            else:
                results.add(codec.serde(Topic.GENERATION_RESULTS).decode(message.value())["job_id"])
    finally:
        consumer.close()
        runner.request_stop()
        await task

    assert results == {j["job_id"] for j in good}, "the good requests of the batch all completed"
    assert set(letters) == {bad["job_id"]}
    assert letters[bad["job_id"]]["stage"] == "generate"
    assert letters[bad["job_id"]]["error.class"] == "ValueError"
