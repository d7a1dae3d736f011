"""Two copies of one generation request in one batch (normal under at-least-once) each get their
own answer, also when generation fails for that request and the batch is bisected: real Kafka
and MinIO, the worker under the real runner, a remote inference API on 127.0.0.1 that refuses
one prompt (422) so the backend call fails for the whole group and is split."""

from __future__ import annotations

import asyncio
import copy
import io
import time
import uuid
from collections import Counter
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer
from PIL import Image

from deploy.local.stack import LocalStack
from gpu_workers.worker import GenerateStage
from processors import storage_keys
from processors.config import Settings
from processors.runtime.codec import Codec
from processors.runtime.dlq import parse_headers
from processors.runtime.runner import StageRunner
from processors.runtime.stage import StageContext
from processors.storage import ObjectStore
from schemas.topics import Topic, TopicNames
from tests.fixtures.avro_samples import JOB_V1
from tests.ml.remote_api import InferenceAPI

pytestmark = pytest.mark.integration


def stored_product(store: ObjectStore) -> dict[str, Any]:
    """A product reference really in storage (a fresh image, so no cache anywhere knows it)."""
    image = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    image.paste((30, 90, 200, 255), (10, 10, 30, 30))
    image.putpixel((0, 0), (uuid.uuid4().int % 256, 1, 2, 255))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    obj, _ = store.put_content_addressed(storage_keys.REFS_PREFIX, buf.getvalue(), "image/png", "png")
    return {
        "role": "PRODUCT",
        "key": obj.key,
        "sha256": obj.sha256,
        "content_type": "image/png",
        "width": 40,
        "height": 40,
        "size_bytes": obj.size,
        "mask_key": None,
    }


def generation_request(
    ref: dict[str, Any], prompt: str, backend: str = "remote", fallbacks: list[str] | None = None
) -> dict[str, Any]:
    job = copy.deepcopy(JOB_V1)
    job["job_id"] = f"dup-{uuid.uuid4().hex[:10]}"
    job["references"] = [ref]
    job["spec"].update(width=48, height=48)
    job["prompt"] = {
        "template_id": "studio-hero",
        "template_version": "1.0.0",
        "positive": prompt,
        "negative": "",
        "variables": {},
    }
    job["route"] = {
        "rule_id": "t",
        "rules_version": "1",
        "backend": backend,
        "model": "m" if backend == "remote" else backend,
        "pool": "cpu",
        "fallbacks": fallbacks or [],
        "params": {"steps": "4"},
        "canary": False,
    }
    return job


def worker_settings(stack: Settings, endpoint: str, tag: str) -> Settings:
    settings = stack.model_copy(
        update={
            "kafka": stack.kafka.model_copy(
                update={"topic_prefix": f"{tag}-{uuid.uuid4().hex[:6]}.", "partitions": 1}
            ),
            "generation": stack.generation.model_copy(update={"remote_endpoint": endpoint, "max_batch": 8}),
        }
    )
    local = LocalStack(settings, progress=lambda _: None)
    local.ensure_topics()
    local.ensure_schemas()  # the prefix's subjects: every topic is registry-framed
    return settings


async def test_copies_of_a_failing_request_in_one_bisected_batch_each_get_a_dead_letter(
    stack_settings: Settings,
) -> None:
    api = await InferenceAPI().start()
    try:
        settings = worker_settings(stack_settings, api.endpoint, "gdup")
        store = ObjectStore(settings.storage)
        ref = await asyncio.to_thread(stored_product, store)
        good = [generation_request(ref, f"a cube {i}") for i in range(2)]
        bad = generation_request(ref, "a poison cube")
        # One batch: the failing request twice, and a good one twice, among distinct ones.
        sent = [good[0], bad, good[1], bad, good[0]]
        names, codec = TopicNames(settings.kafka.topic_prefix), Codec.of(settings)
        producer = Producer({"bootstrap.servers": settings.kafka.bootstrap})
        for job in sent:
            producer.produce(
                names(Topic.GENERATION_REQUESTS),
                key=job["job_id"].encode(),
                value=codec.serde(Topic.GENERATION_REQUESTS).encode(job),
            )
        producer.flush(10)

        runner = StageRunner(GenerateStage(StageContext(settings, "generate")))
        task = asyncio.create_task(runner.run())
        results: Counter[str] = Counter()
        keys: dict[str, set[tuple[str, ...]]] = {}
        letters: list[dict[str, str]] = []
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
            while (sum(results.values()) < 3 or len(letters) < 2) and time.monotonic() < deadline:
                assert not task.done(), f"the worker stopped: {task.exception() if task.done() else ''}"
                message = await asyncio.to_thread(consumer.poll, 0.5)
                if message is None or message.error():
                    continue
                if message.topic() == names(Topic.PIPELINE_DLQ):
                    letters.append(parse_headers(message.headers()))
                else:
                    result = codec.serde(Topic.GENERATION_RESULTS).decode(message.value())
                    results[result["job_id"]] += 1
                    keys.setdefault(result["job_id"], set()).add(tuple(result["generation"]["output_keys"]))
            # Nothing more comes: one answer per copy, not one per generated image or per try.
            for _ in range(4):
                message = await asyncio.to_thread(consumer.poll, 0.5)
                if message is not None and not message.error():
                    pytest.fail(f"unexpected extra message on {message.topic()}")
        finally:
            consumer.close()
            runner.request_stop()
            await task  # the worker finished cleanly: no crash loop

        assert results == {good[0]["job_id"]: 2, good[1]["job_id"]: 1}, "one result per copy"
        assert all(len(k) == 1 for k in keys.values()), "both copies name the same stored image"
        assert [letter["original.key"] for letter in letters] == [bad["job_id"]] * 2, "one letter per copy"
        assert {letter["original.offset"] for letter in letters} == {"1", "3"}
        assert {letter["error.class"] for letter in letters} == {"RemoteRequestError"}
        # The group failed as a whole and was bisected: good requests were sent more than once,
        # yet the failing request was generated once per try, not once per copy.
        assert api.prompts["a cube 0"] >= 2
        assert api.prompts["a poison cube"] <= 3
    finally:
        await api.stop()
