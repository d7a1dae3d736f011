"""Publishing and notifying are separate steps: with the webhook receiver on 127.0.0.1 down, a
ready job is published at once (its `published` event and its assets.published record); the
notification waits in the outbox and reaches the receiver once it is up, exactly once per
delivery id, also when the publish is redelivered or the stage restarts; `notified` records it
with the tries it took. Real Kafka, MinIO and a real receiver."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from confluent_kafka import Consumer, Producer

from deploy.local.session import free_port
from deploy.local.stack import LocalStack
from processors.config import Settings
from processors.runtime import InputRecord, StageContext
from processors.runtime.codec import Codec
from processors.runtime.records import now_ms
from processors.runtime.runner import StageRunner
from processors.stages.publish import DELIVERY_HEADER, Delivery, NotifyOutbox, PublishStage
from processors.storage import ObjectStore
from processors.storage_keys import notify_pending_prefix, notify_receipt_key
from schemas.topics import Topic, TopicNames
from tests.integration.test_publish_webhooks_and_decisions import _ready_job

pytestmark = pytest.mark.integration


class Receiver:
    """A webhook receiver on a fixed port, started and stopped by the test."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}/hook"
        self.by_delivery: Counter[str] = Counter()
        self.bodies: list[dict[str, Any]] = []
        self._runner: web.AppRunner | None = None

    async def up(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._receive)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True).start()

    async def down(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.json()
        assert request.headers[DELIVERY_HEADER] == body["delivery_id"]
        self.by_delivery[body["delivery_id"]] += 1
        self.bodies.append(body)
        return web.Response(status=204)

    async def wait_for(self, count: int, timeout_s: float = 15.0) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.bodies) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert len(self.bodies) >= count, f"{len(self.bodies)} notification(s) arrived, wanted {count}"


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver(free_port())  # nobody listens there yet: the receiver is down
    yield found
    await found.down()


def _settings(stack: Settings, webhook_url: str) -> Settings:
    tag = uuid.uuid4().hex[:8]
    return stack.model_copy(
        update={
            "kafka": stack.kafka.model_copy(update={"topic_prefix": f"test-notify-{tag}.", "partitions": 1}),
            "review": stack.review.model_copy(
                update={
                    "policy": "auto",
                    "webhook_url": webhook_url,
                    "publish_prefix": f"tests/published-{tag}/",
                    "notify_backoff_initial_s": 0.1,
                    "notify_backoff_max_s": 0.4,
                    "notify_poll_s": 0.05,
                }
            ),
        }
    )


def _record(job: dict[str, Any], offset: int) -> InputRecord:
    value = copy.deepcopy(job)
    return InputRecord(Topic.ASSETS_READY, 0, offset, job["job_id"].encode(), value, b"", [], 0)


async def test_published_at_once_and_notified_once_when_the_receiver_is_back(
    stack_settings: Settings, receiver: Receiver
) -> None:
    settings = _settings(stack_settings, receiver.url)
    store = ObjectStore(settings.storage)
    stage = PublishStage(StageContext(settings, "publish"))
    await stage.start()
    try:
        job = await asyncio.to_thread(_ready_job, store)
        outcome = await stage.handle(_record(job, 0))

        states = [(e.state, e.reason) for e in outcome.events if e.job_id == job["job_id"]]
        assert states == [("approved", ""), ("published", ""), ("retry", "webhook_unreachable")]
        (output,) = outcome.outputs
        assert output.topic is Topic.ASSETS_PUBLISHED and outcome.dead_letter is None
        pending = await asyncio.to_thread(
            lambda: list(store.list_keys(notify_pending_prefix(stage.topic_prefix)))
        )
        assert len(pending) == 1, "the notification waits in the outbox"

        await asyncio.sleep(0.5)  # tries while the receiver is down reach nobody
        await receiver.up()
        await receiver.wait_for(1)
        (body,) = receiver.bodies
        delivery_id = body["delivery_id"]
        assert body["job_id"] == job["job_id"] and sorted(body["files"]) == sorted(
            output.value["published_keys"]
        )

        # At least once: the same ready asset again (redelivered before its commit). Published
        # again (idempotent copies), never notified again.
        again = await stage.handle(_record(job, 0))
        assert [e.state for e in again.events if e.job_id == job["job_id"]][:2] == ["approved", "published"]
        notified = [e for e in again.events if e.state == "notified"]
        assert [e.job_id for e in notified] == [job["job_id"]], "the background delivery's event comes out"
        assert int(notified[0].attributes["attempts"]) >= 2
        assert notified[0].attributes["delivery_id"] == delivery_id
        # A copy of the job at another offset (a redone upstream batch) publishes nothing more.
        copy_of = await stage.handle(_record(job, 5))
        assert [(e.state, e.reason) for e in copy_of.events] == [("duplicate_job", "already_published")]
        assert not copy_of.outputs
        assert await asyncio.to_thread(store.exists, notify_receipt_key(delivery_id, stage.topic_prefix))
    finally:
        await stage.stop()

    # A restarted publish process finds nothing left to send.
    restarted = PublishStage(StageContext(settings, "publish"))
    await restarted.start()
    await asyncio.sleep(1.0)
    await restarted.stop()
    assert receiver.by_delivery == {delivery_id: 1}, "exactly once per delivery id"


async def test_the_runner_publishes_while_the_receiver_is_down(
    stack_settings: Settings, receiver: Receiver
) -> None:
    """Through the real runner and Kafka: the assets.published record is on the topic while the
    receiver is down; the notification arrives once it is up, and `notified` reaches
    pipeline.events with the next record the stage handles."""
    settings = _settings(stack_settings, receiver.url)
    stack = LocalStack(settings, progress=lambda _: None)
    stack.ensure_topics()
    stack.ensure_schemas()  # the prefix's subjects: every topic is registry-framed
    store = ObjectStore(settings.storage)
    names, codec = TopicNames(settings.kafka.topic_prefix), Codec.of(settings)
    first, second = [await asyncio.to_thread(_ready_job, store) for _ in range(2)]
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap})

    def send(job: dict[str, Any]) -> None:
        producer.produce(
            names(Topic.ASSETS_READY),
            key=job["job_id"].encode(),
            value=codec.serde(Topic.ASSETS_READY).encode(job),
        )
        producer.flush(10)

    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap,
            "group.id": f"t-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([names(Topic.ASSETS_PUBLISHED), names(Topic.PIPELINE_EVENTS)])
    published: Counter[str] = Counter()
    states: dict[str, list[str]] = {}

    async def read_until(done: Any, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not done() and time.monotonic() < deadline:
            assert not task.done(), task
            message = await asyncio.to_thread(consumer.poll, 0.3)
            if message is None or message.error():
                continue
            if message.topic() == names(Topic.ASSETS_PUBLISHED):
                published[codec.serde(Topic.ASSETS_PUBLISHED).decode(message.value())["job_id"]] += 1
            else:
                event = codec.serde(Topic.PIPELINE_EVENTS).decode(message.value())
                states.setdefault(event["job_id"], []).append(event["state"])
        assert done(), (published, states)

    runner = StageRunner(PublishStage(StageContext(settings, "publish")))
    task = asyncio.create_task(runner.run())
    try:
        await asyncio.to_thread(send, first)
        await read_until(
            lambda: published[first["job_id"]] == 1 and "published" in states.get(first["job_id"], [])
        )
        assert receiver.bodies == [], "published while the receiver is down"
        await receiver.up()
        await receiver.wait_for(1)
        await asyncio.to_thread(send, second)
        await read_until(
            lambda: "notified" in states.get(first["job_id"], []) and published[second["job_id"]]
        )
    finally:
        consumer.close()
        runner.request_stop()
        await task
    await receiver.wait_for(2)
    assert sorted(b["job_id"] for b in receiver.bodies) == sorted([first["job_id"], second["job_id"]])
    assert set(receiver.by_delivery.values()) == {1}
    assert published == {first["job_id"]: 1, second["job_id"]: 1}


async def test_an_entry_whose_process_died_is_delivered_and_a_live_ones_is_left_alone(
    stack_settings: Settings, receiver: Receiver
) -> None:
    settings = _settings(stack_settings, receiver.url)
    settings = settings.model_copy(
        update={"review": settings.review.model_copy(update={"notify_timeout_s": 1.0})}
    )
    store = ObjectStore(settings.storage)
    outbox = NotifyOutbox(store, settings.kafka.topic_prefix)
    hour_ago = now_ms() - 3_600_000
    jobs = [{**await asyncio.to_thread(_ready_job, store), "published_keys": ["k"]} for _ in range(2)]
    orphan = dataclasses.replace(
        Delivery.of(jobs[0], ""), owner="gone-host:1", queued_at=hour_ago, touched_at=hour_ago, attempts=3
    )
    live = dataclasses.replace(Delivery.of(jobs[1], ""), owner="other-host:7", touched_at=now_ms())
    for entry in (orphan, live):
        await asyncio.to_thread(outbox.save, entry)
    await receiver.up()

    stage = PublishStage(StageContext(settings, "publish"))
    await stage.start()
    try:
        await receiver.wait_for(1)
        await asyncio.sleep(0.5)
        (notified,) = stage.notifier.take_events()
        assert (notified.job_id, notified.state, notified.attributes["attempts"]) == (
            orphan.job_id,
            "notified",
            "4",
        )
    finally:
        await stage.stop()
    assert receiver.by_delivery == {orphan.delivery_id: 1}, "the live process's entry is its own to send"
    assert await asyncio.to_thread(
        store.exists, notify_receipt_key(orphan.delivery_id, settings.kafka.topic_prefix)
    )
