"""Intake and prompt stage throughput, messages/s, through the real runtime and Kafka.

    python -m tests.bench.bench_stages [--events 2000]

Produces N catalog events to a fresh topic prefix, runs the intake stage in this process until it
has consumed them all, then feeds its N jobs (given stored references) to the prompt stage the
same way. Time runs from the stage's first consumed batch to its last commit. Needs the stack.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import Callable

from confluent_kafka import Producer

from deploy.local.stack import LocalStack
from gateway.harness.sample_catalog import SampleProduct, catalog_events
from processors.config import Settings, load_settings
from processors.runtime.codec import Codec
from processors.runtime.runner import StageRunner
from processors.runtime.stage import Stage, StageContext
from processors.stages.intake import IntakeStage
from processors.stages.prompt import PromptStage
from schemas.topics import Topic, TopicNames


def catalog(n: int) -> list[dict]:
    product = SampleProduct("BENCH", "Bench mug", "Acme", "kitchen", {"color": "red"}, "mug.png")
    events = catalog_events([product], "https://images.example.com", salt="bench") * n
    out = []
    for i in range(n):
        event = {
            **events[i],
            "event_id": f"bench-{i}",
            "product": {**events[i]["product"], "sku": f"BENCH-{i}"},
        }
        out.append(event)
    return out


def produce(settings: Settings, topic: Topic, records: list[dict], key: Callable[[dict], str]) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap, "linger.ms": 20})
    serde = Codec.of(settings).serde(topic)
    name = TopicNames(settings.kafka.topic_prefix)(topic)
    for record in records:
        producer.produce(name, key=key(record).encode(), value=serde.encode(record))
        producer.poll(0)
    producer.flush(60)


async def drive(stage: Stage, expected: int) -> float:
    runner = StageRunner(stage)
    started: float | None = None
    task = asyncio.create_task(runner.run())
    consumed = stage.ctx.metrics.consumed.labels(stage.name)
    while consumed._value.get() < expected:
        if started is None and consumed._value.get() > 0:
            started = time.perf_counter()
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - (started or time.perf_counter())
    runner.request_stop()
    await task
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=2000)
    args = parser.parse_args()
    base = load_settings()
    prefix = f"bench-stages-{uuid.uuid4().hex[:6]}."
    settings = base.model_copy(update={"kafka": base.kafka.model_copy(update={"topic_prefix": prefix})})
    stack = LocalStack(settings, progress=lambda _: None)
    stack.ensure_topics()
    stack.ensure_schemas()  # the prefix's subjects: every topic is registry-framed

    events = catalog(args.events)
    # Keyed by SKU, as upstream catalogues do: intake re-keys anything else (one more hop).
    produce(settings, Topic.CATALOG_EVENTS, events, lambda e: e["product"]["sku"])
    intake = IntakeStage(StageContext(settings, "intake"))
    elapsed = asyncio.run(drive(intake, args.events))
    print(f"intake: {args.events} events in {elapsed:.2f} s = {args.events / elapsed:,.0f} messages/s")

    from deploy.local.session import expected_job_ids
    from processors.intake.fanout import fan_out
    from processors.prompting import TemplateStore

    templates = TemplateStore()
    jobs = [job for e in events for job in fan_out(e, 0, templates.resolve_version)]
    assert len(jobs) == len(expected_job_ids(events))
    for job in jobs:
        job["source_references"] = []
        job["references"] = [
            {
                "role": "PRODUCT",
                "key": "refs/sha256/00/00.png",
                "sha256": "00",
                "content_type": "image/png",
                "width": 512,
                "height": 512,
                "size_bytes": 1,
                "mask_key": None,
            }
        ]
    produce(settings, Topic.JOBS_REFERENCED, jobs, lambda j: j["job_id"])
    prompt = PromptStage(StageContext(settings, "prompt"))
    elapsed = asyncio.run(drive(prompt, len(jobs)))
    print(f"prompt: {len(jobs)} jobs in {elapsed:.2f} s = {len(jobs) / elapsed:,.0f} messages/s")


if __name__ == "__main__":
    main()
