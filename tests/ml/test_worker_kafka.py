"""The generation worker with a tiny random-weight diffusers pipeline, through the real registry,
against the real Kafka and MinIO: batching, lineage on every result, and failover when the primary
backend is down."""

from __future__ import annotations

import asyncio
import copy
import io
import time
import uuid
from pathlib import Path

import diffusers  # noqa: F401 - the ml extra installs it: missing is an error, not a skip
import pytest
import yaml
from confluent_kafka import Consumer, Producer
from PIL import Image

from deploy.local.stack import LocalStack
from gpu_workers.registry import ModelRegistry
from gpu_workers.worker import GenerateStage
from processors import storage_keys
from processors.runtime.codec import Codec
from processors.runtime.runner import StageRunner
from processors.runtime.stage import StageContext
from processors.storage import ObjectStore
from schemas.topics import Topic, TopicNames
from tests.fixtures.avro_samples import JOB_V1
from tests.support.ml_pipelines import TINY_SIZE, build_tiny_sd_pipeline, tiny_registry_dict

pytestmark = [pytest.mark.ml, pytest.mark.integration]


@pytest.fixture(scope="module")
def worker_settings(stack_settings, tmp_path_factory):
    root: Path = tmp_path_factory.mktemp("models")
    path = build_tiny_sd_pipeline(root / "tiny-sd")
    models = root / "models.yaml"
    models.write_text(yaml.safe_dump(tiny_registry_dict({"tiny-sd": path})))
    with __import__("socket").socket() as s:  # a port nobody listens on: the remote API is down
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    settings = stack_settings.model_copy(
        update={
            "kafka": stack_settings.kafka.model_copy(
                update={"topic_prefix": f"mltest-{uuid.uuid4().hex[:6]}."}
            ),
            "generation": stack_settings.generation.model_copy(
                update={
                    "models_file": str(models),
                    "remote_endpoint": f"http://127.0.0.1:{dead_port}",
                    "max_batch": 4,
                }
            ),
        }
    )
    stack = LocalStack(settings, progress=lambda _: None)
    stack.ensure_topics()
    stack.ensure_schemas()  # the prefix's subjects: every topic is registry-framed
    return settings


def _product_refs(store: ObjectStore) -> list[dict]:
    image = Image.new("RGBA", (48, 48), (0, 0, 0, 0))
    image.paste((200, 40, 40, 255), (12, 12, 36, 36))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    obj, _ = store.put_content_addressed(storage_keys.REFS_PREFIX, buf.getvalue(), "image/png", "png")
    mask = image.getchannel("A")
    mbuf = io.BytesIO()
    mask.save(mbuf, format="PNG")
    store.put_bytes(storage_keys.mask_key(obj.sha256), mbuf.getvalue(), "image/png")
    return [
        {
            "role": "PRODUCT",
            "key": obj.key,
            "sha256": obj.sha256,
            "content_type": "image/png",
            "width": 48,
            "height": 48,
            "size_bytes": obj.size,
            "mask_key": storage_keys.mask_key(obj.sha256),
        }
    ]


def _request(job_id: str, refs: list[dict], backend: str, fallbacks: list[str], variants: int = 1) -> dict:
    job = copy.deepcopy(JOB_V1)
    job["job_id"] = job_id
    job["references"] = refs
    job["spec"].update(width=TINY_SIZE, height=TINY_SIZE, variants=variants)
    job["prompt"] = {
        "template_id": "studio-hero",
        "template_version": "1.0.0",
        "positive": "a red cube",
        "negative": "blurry",
        "variables": {},
    }
    job["route"] = {
        "rule_id": "test",
        "rules_version": "1",
        "backend": backend,
        "model": "tiny-sd",
        "pool": "cpu",
        "fallbacks": fallbacks,
        "params": {"steps": "2", "guidance": "5.0", "sampler": "euler"},
        "canary": False,
    }
    return job


async def _run_worker(settings, jobs: list[dict], timeout_s: float = 180) -> dict[str, dict]:
    names = TopicNames(settings.kafka.topic_prefix)
    codec = Codec.of(settings)
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap})
    for job in jobs:
        producer.produce(
            names(Topic.GENERATION_REQUESTS),
            key=job["job_id"].encode(),
            value=codec.serde(Topic.GENERATION_REQUESTS).encode(job),
        )
    producer.flush(10)

    runner = StageRunner(GenerateStage(StageContext(settings, "generate")))
    task = asyncio.create_task(runner.run())
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap,
            "group.id": f"t-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([names(Topic.GENERATION_RESULTS)])
    wanted = {j["job_id"] for j in jobs}
    results: dict[str, dict] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while wanted - set(results) and time.monotonic() < deadline:
            message = await asyncio.to_thread(consumer.poll, 0.5)
            if message is not None and not message.error():
                record = codec.serde(Topic.GENERATION_RESULTS).decode(message.value())
                if record["job_id"] in wanted:
                    results[record["job_id"]] = record
            if task.done():
                task.result()
    finally:
        consumer.close()
        runner.request_stop()
        await task
    return results


async def test_worker_batches_diffusers_requests_and_records_lineage(worker_settings) -> None:
    store = ObjectStore(worker_settings.storage)
    refs = _product_refs(store)
    jobs = [
        _request(f"ml-{uuid.uuid4().hex[:8]}", refs, "diffusers", ["compositor:compositor"]) for _ in range(4)
    ]
    jobs.append(
        _request(f"ml-bon-{uuid.uuid4().hex[:8]}", refs, "diffusers", ["compositor:compositor"], variants=3)
    )
    results = await _run_worker(worker_settings, jobs)

    assert set(results) == {j["job_id"] for j in jobs}, "no job may be lost"
    version = ModelRegistry.from_file(worker_settings.generation.models_file).version("tiny-sd")
    for job_id, result in results.items():
        generation = result["generation"]
        assert generation["backend"] == "diffusers" and generation["model"] == "tiny-sd"
        assert generation["model_version"] == version
        assert generation["steps"] == 2 and generation["sampler"] == "euler" and generation["guidance"] == 5.0
        assert generation["fell_back_from"] is None
        assert generation["compute_ms"] > 0 and generation["queue_wait_ms"] >= 0
        for key in generation["output_keys"]:
            with Image.open(io.BytesIO(store.get_bytes(key))) as image:
                assert image.size == (TINY_SIZE, TINY_SIZE)
        expected_outputs = 3 if job_id.startswith("ml-bon-") else 1
        assert len(generation["output_keys"]) == expected_outputs
    # Compatible requests shared forward passes.
    assert max(r["generation"]["batch_size"] for r in results.values()) > 1


async def test_jobs_complete_on_the_fallback_when_the_primary_is_down(worker_settings) -> None:
    store = ObjectStore(worker_settings.storage)
    refs = _product_refs(store)
    jobs = [
        _request(f"fo-{uuid.uuid4().hex[:8]}", refs, "remote", ["diffusers:tiny-sd", "compositor:compositor"])
        for _ in range(3)
    ]
    results = await _run_worker(worker_settings, jobs)
    assert set(results) == {j["job_id"] for j in jobs}, "no job may be lost"
    for result in results.values():
        assert result["generation"]["backend"] == "diffusers"
        assert result["generation"]["fell_back_from"] == "remote"
