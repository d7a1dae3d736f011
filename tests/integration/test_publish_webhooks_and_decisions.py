"""The publish stage against real MinIO and a real webhook receiver on 127.0.0.1: a refused or
failing notification never holds up or dead-letters published files (the outbox retries it:
test_notify_outbox.py), a redelivered ready asset does not reopen a decided job, and two
conflicting decisions in one batch cannot both take effect."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import hashlib
import io
import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web
from PIL import Image

from processors.config import Settings, WebhookEndpoint
from processors.runtime import InputRecord, Outcome, StageContext
from processors.stages.publish import PublishStage
from processors.storage import ObjectStore
from processors.storage_keys import decided_key, pending_key, published_prefix
from processors.webhooks import WebhookVerificationError, new_secret, verify
from schemas.topics import Topic
from tests.fixtures.avro_samples import JOB_V1

pytestmark = pytest.mark.integration


@pytest.fixture
async def webhook() -> AsyncIterator[dict[str, Any]]:
    """A receiver answering whatever status the test sets; it records what it was sent."""
    state: dict[str, Any] = {"status": 200, "bodies": []}

    async def receive(request: web.Request) -> web.Response:
        state["bodies"].append(await request.json())
        return web.Response(status=state["status"])

    app = web.Application()
    app.router.add_post("/hook", receive)
    runner = web.AppRunner(app, shutdown_timeout=0.2)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    state["url"] = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    try:
        yield state
    finally:
        await runner.cleanup()


def _settings(stack: Settings, policy: str = "auto", webhook_url: str = "") -> Settings:
    tag = uuid.uuid4().hex[:8]
    return stack.model_copy(
        update={
            "kafka": stack.kafka.model_copy(update={"topic_prefix": f"test-pub-{tag}."}),
            "review": stack.review.model_copy(
                update={
                    "policy": policy,
                    "webhook_url": webhook_url,
                    "publish_prefix": f"tests/published-{tag}/",
                }
            ),
        }
    )


def _ready_job(store: ObjectStore, passed: bool = True) -> dict[str, Any]:
    """A job as postprocess hands it on, with its derivatives really in storage."""
    job = copy.deepcopy(JOB_V1)
    job["job_id"] = f"pub-{uuid.uuid4().hex[:12]}"
    job["product"]["sku"] = f"SKU-PUB-{uuid.uuid4().hex[:6]}"
    job["quality"] = {"passed": passed, "scores": {"overall": 0.9}, "reasons": [], "chosen_index": 0}
    derivatives = []
    for name, size in (("hero", (64, 48)), ("thumb", (32, 24))):
        buf = io.BytesIO()
        Image.new("RGB", size, (10, 120, 200)).save(buf, "PNG")
        data = buf.getvalue()
        key = f"tests/derivatives/{job['job_id']}/{name}.png"
        store.put_bytes(key, data, "image/png")
        derivatives.append(
            {
                "name": name,
                "key": key,
                "width": size[0],
                "height": size[1],
                "format": "png",
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        )
    job["derivatives"] = derivatives
    return job


def _record(topic: Topic, value: dict[str, Any], offset: int = 0) -> InputRecord:
    return InputRecord(
        topic=topic,
        partition=0,
        offset=offset,
        key=value["job_id"].encode(),
        value=copy.deepcopy(value),
        raw_value=b"",
        headers=[],
        timestamp_ms=0,
    )


def _decision(job_id: str, decision: str, reviewer: str, reason: str = "") -> dict[str, Any]:
    return {
        "job_id": job_id,
        "decision": decision,
        "reviewer": reviewer,
        "reason": reason,
        "decided_at": dt.datetime.now(dt.UTC),
    }


@pytest.fixture
async def make_stage(stack_settings: Settings) -> AsyncIterator[Callable[..., Any]]:
    stages: list[PublishStage] = []

    async def make(**kwargs: Any) -> PublishStage:
        stage = PublishStage(StageContext(_settings(stack_settings, **kwargs), "publish"))
        await stage.start()
        stages.append(stage)
        return stage

    yield make
    for stage in stages:
        await stage.stop()


def _states(outcome: Outcome) -> list[tuple[str, str]]:
    return [(event.state, event.reason) for event in outcome.events]


async def test_refused_webhook_publishes_and_records_notify_failed(
    make_stage: Any, webhook: dict[str, Any]
) -> None:
    webhook["status"] = 400
    stage = await make_stage(webhook_url=webhook["url"])
    store = stage.ctx.store
    job = await asyncio.to_thread(_ready_job, store)

    outcome = await stage.handle(_record(Topic.ASSETS_READY, job))

    assert _states(outcome) == [("approved", ""), ("published", ""), ("notify_failed", "webhook_400")]
    assert outcome.dead_letter is None
    (output,) = outcome.outputs
    assert output.topic is Topic.ASSETS_PUBLISHED
    prefix = published_prefix(stage.settings.publish_prefix, job)
    keys = output.value["published_keys"]
    assert sorted(keys) == sorted([f"{prefix}/hero.png", f"{prefix}/thumb.png", f"{prefix}/lineage.json"])
    for key in keys:
        assert await asyncio.to_thread(store.exists, key)
    (body,) = webhook["bodies"]
    assert body["job_id"] == job["job_id"]


async def test_webhook_server_error_publishes_now_and_notifies_later(
    make_stage: Any, webhook: dict[str, Any]
) -> None:
    webhook["status"] = 503
    stage = await make_stage(webhook_url=webhook["url"])
    stage.settings = stage.settings.model_copy(
        update={"notify_backoff_initial_s": 0.05, "notify_backoff_max_s": 0.1}
    )
    stage.notifier.settings = stage.settings
    job = await asyncio.to_thread(_ready_job, stage.ctx.store)
    # Publishing does not wait on the receiver: the files are published, the notification waits.
    outcome = await stage.handle(_record(Topic.ASSETS_READY, job))
    assert _states(outcome) == [("approved", ""), ("published", ""), ("retry", "webhook_503")]
    assert [o.topic for o in outcome.outputs] == [Topic.ASSETS_PUBLISHED] and outcome.dead_letter is None
    # The receiver recovers; the outbox delivers, and the stage's next outcome says so.
    webhook["status"] = 204
    # The receiver sees the body before the notifier sees the 204, so wait on the event itself.
    notified: list[Any] = []
    for _ in range(200):
        notified += [e for e in stage.notifier.take_events() if e.state == "notified"]
        if notified:
            break
        await asyncio.sleep(0.05)
    assert [e.job_id for e in notified] == [job["job_id"]]
    assert [b["job_id"] for b in webhook["bodies"]] == [job["job_id"]] * 2  # one 503, one 204


async def test_unreachable_webhook_publishes_now(make_stage: Any) -> None:
    stage = await make_stage(webhook_url="http://127.0.0.1:9/hook")
    job = await asyncio.to_thread(_ready_job, stage.ctx.store)
    outcome = await stage.handle(_record(Topic.ASSETS_READY, job))
    assert _states(outcome) == [("approved", ""), ("published", ""), ("retry", "webhook_unreachable")]
    retry = outcome.events[-1]
    assert retry.attributes["attempts"] == "1" and retry.attributes["delivery_id"]
    assert [o.topic for o in outcome.outputs] == [Topic.ASSETS_PUBLISHED]


async def test_redelivered_ready_asset_does_not_reopen_a_decided_job(make_stage: Any) -> None:
    stage = await make_stage(policy="hold")
    store = stage.ctx.store
    prefix = stage.topic_prefix
    job = await asyncio.to_thread(_ready_job, store)
    ready = _record(Topic.ASSETS_READY, job)

    assert [s for s, _ in _states(await stage.handle(ready))] == ["in_review"]
    assert await asyncio.to_thread(store.exists, pending_key(job["job_id"], prefix))
    decision = _decision(job["job_id"], "REJECT", "ana", "off-brand")
    outcome = await stage.handle(_record(Topic.REVIEW_DECISIONS, decision))
    assert _states(outcome) == [("rejected", "reviewer_rejected")]

    # At-least-once: the same assets.ready arrives again.
    outcome = await stage.handle(ready)
    assert _states(outcome) == [("already_decided", "redelivered_after_decision")]
    assert "reject by ana" in outcome.events[0].detail
    assert not outcome.outputs
    assert not await asyncio.to_thread(store.exists, pending_key(job["job_id"], prefix))
    assert await asyncio.to_thread(store.exists, decided_key(job["job_id"], prefix))

    # Under policy auto, a rejected job's redelivery is not published either.
    auto = await make_stage(policy="auto")
    auto.topic_prefix = prefix
    outcome = await auto.handle(ready)
    assert [s for s, _ in _states(outcome)] == ["already_decided"]
    assert not outcome.outputs


async def test_conflicting_decisions_in_one_batch_first_wins(make_stage: Any) -> None:
    assert PublishStage.concurrency == 1
    for _ in range(3):
        stage = await make_stage(policy="hold")
        job = await asyncio.to_thread(_ready_job, stage.ctx.store)
        await stage.handle(_record(Topic.ASSETS_READY, job))
        approve = _record(Topic.REVIEW_DECISIONS, _decision(job["job_id"], "APPROVE", "bo"), offset=1)
        reject = _record(Topic.REVIEW_DECISIONS, _decision(job["job_id"], "REJECT", "ana", "no"), offset=2)
        # As the runner handles one batch's records: all at once.
        outcomes = await asyncio.gather(stage.handle(approve), stage.handle(reject))
        states = [state for outcome in outcomes for state, _ in _states(outcome)]
        assert states == ["approved", "published", "decision_ignored"], states


async def test_a_copy_of_a_published_job_from_another_input_publishes_nothing(make_stage: Any) -> None:
    """A redone upstream batch (postprocess killed after producing, before committing) writes the
    ready job twice, at two offsets: one published record, whatever the order of copies."""
    stage = await make_stage()
    job = await asyncio.to_thread(_ready_job, stage.ctx.store)
    first = await stage.handle(_record(Topic.ASSETS_READY, job, offset=3))
    assert [o.topic for o in first.outputs] == [Topic.ASSETS_PUBLISHED]
    copy_of = await stage.handle(_record(Topic.ASSETS_READY, job, offset=4))
    assert _states(copy_of) == [("duplicate_job", "already_published")]
    assert not copy_of.outputs and copy_of.dead_letter is None
    assert "assets.ready/0/3" in copy_of.events[0].detail
    # The first input again (redelivered before its commit) is the same publish, redone.
    again = await stage.handle(_record(Topic.ASSETS_READY, job, offset=3))
    assert [o.topic for o in again.outputs] == [Topic.ASSETS_PUBLISHED]


async def test_two_copies_of_a_job_in_one_batch_publish_once(make_stage: Any) -> None:
    """The records of a batch run at once: a share group's redelivery and the original (or a
    redone upstream batch) in the same batch must not both find the job unclaimed."""
    stage = await make_stage()
    job = await asyncio.to_thread(_ready_job, stage.ctx.store)
    outcomes = await asyncio.gather(
        stage.handle(_record(Topic.ASSETS_READY, job, offset=7)),
        stage.handle(_record(Topic.ASSETS_READY, job, offset=8)),
    )
    published = [o for o in outcomes if [out.topic for out in o.outputs] == [Topic.ASSETS_PUBLISHED]]
    assert len(published) == 1, [_states(o) for o in outcomes]
    (duplicate,) = [o for o in outcomes if o is not published[0]]
    assert _states(duplicate) == [("duplicate_job", "already_published")]
    assert len(stage.claims) == 0, "a lock outlived its users"


# -- signed notifications to the request's own or its source's endpoint ------------------------


@pytest.fixture
async def signed_receiver() -> AsyncIterator[dict[str, Any]]:
    """A receiver that keeps each POST's raw body and headers, as a Standard Webhooks receiver
    must verify them (before parsing the body); answers the statuses queued in "statuses"."""
    state: dict[str, Any] = {"statuses": [], "posts": []}

    async def receive(request: web.Request) -> web.Response:
        state["posts"].append((dict(request.headers), await request.read()))
        return web.Response(status=state["statuses"].pop(0) if state["statuses"] else 200)

    app = web.Application()
    app.router.add_post("/own", receive)
    runner = web.AppRunner(app, shutdown_timeout=0.2)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    state["host"], state["url"] = f"127.0.0.1:{port}", f"http://127.0.0.1:{port}/own"
    try:
        yield state
    finally:
        await runner.cleanup()


async def _signed_stage(stack_settings: Settings, **webhooks: Any) -> PublishStage:
    settings = _settings(stack_settings)
    settings = settings.model_copy(
        update={
            "webhooks": settings.webhooks.model_copy(update=webhooks),
            "review": settings.review.model_copy(
                update={"notify_backoff_initial_s": 0.05, "notify_backoff_max_s": 0.1}
            ),
        }
    )
    stage = PublishStage(StageContext(settings, "publish"))
    await stage.start()
    return stage


async def _posts(receiver: dict[str, Any], count: int) -> list[tuple[dict[str, str], bytes]]:
    for _ in range(200):
        if len(receiver["posts"]) >= count:
            break
        await asyncio.sleep(0.05)
    return receiver["posts"]


async def test_a_requests_own_webhook_is_signed_and_keeps_its_id_across_retries(
    stack_settings: Settings, signed_receiver: dict[str, Any]
) -> None:
    secret = new_secret()
    stage = await _signed_stage(
        stack_settings, allowed_hosts=[signed_receiver["host"]], sources={}, secret=secret
    )
    try:
        job = await asyncio.to_thread(_ready_job, stage.ctx.store)
        job["source"], job["webhook_url"] = "shop", signed_receiver["url"]
        signed_receiver["statuses"] = [503]
        outcome = await stage.handle(_record(Topic.ASSETS_READY, job))
        assert _states(outcome)[-1] == ("retry", "webhook_503")
        posts = await _posts(signed_receiver, 2)
    finally:
        await stage.stop()
    assert len(posts) == 2
    ids = {verify(secret, headers, body) for headers, body in posts}
    # One notification, two tries: the same webhook-id, each try signed (and verifiable) anew.
    (delivery_id,) = ids
    assert delivery_id == outcome.events[-1].attributes["delivery_id"]
    assert json.loads(posts[1][1])["job_id"] == job["job_id"]
    with pytest.raises(WebhookVerificationError):
        verify(secret, posts[0][0], posts[0][1] + b" ")
    with pytest.raises(WebhookVerificationError):
        verify(new_secret(), *posts[0])


async def test_a_sources_endpoint_gets_its_jobs_signed_with_its_own_secret(
    stack_settings: Settings, signed_receiver: dict[str, Any]
) -> None:
    own = new_secret()
    endpoint = WebhookEndpoint(url=signed_receiver["url"], secret=own)
    stage = await _signed_stage(stack_settings, sources={"pim": endpoint}, secret=new_secret())
    try:
        ours = await asyncio.to_thread(_ready_job, stage.ctx.store)
        ours["source"] = "pim"
        other = await asyncio.to_thread(_ready_job, stage.ctx.store)
        other["source"] = "elsewhere"
        first = await stage.handle(_record(Topic.ASSETS_READY, ours))
        second = await stage.handle(_record(Topic.ASSETS_READY, other, offset=1))
    finally:
        await stage.stop()
    assert _states(first)[-1] == ("notified", "")
    # No endpoint for that source and no catch-all: published, and no notification queued.
    assert _states(second) == [("approved", ""), ("published", "")]
    ((headers, body),) = signed_receiver["posts"]
    verify(own, headers, body)
    assert json.loads(body)["job_id"] == ours["job_id"]


async def test_a_redirect_is_a_refusal_never_followed(
    stack_settings: Settings, signed_receiver: dict[str, Any], webhook: dict[str, Any]
) -> None:
    """Following a 307 would replay the signed POST to wherever Location points, past the host
    allowlist: an allowed host must not be able to aim the publish stage at internal services."""

    async def bounce(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(webhook["url"])

    app = web.Application()
    app.router.add_post("/bounce", bounce)
    runner = web.AppRunner(app, shutdown_timeout=0.2)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    stage = await _signed_stage(stack_settings, allowed_hosts=[f"127.0.0.1:{port}"], secret=new_secret())
    try:
        job = await asyncio.to_thread(_ready_job, stage.ctx.store)
        job["webhook_url"] = f"http://127.0.0.1:{port}/bounce"
        outcome = await stage.handle(_record(Topic.ASSETS_READY, job))
    finally:
        await stage.stop()
        await runner.cleanup()
    assert _states(outcome)[-1] == ("notify_failed", "webhook_307")
    assert webhook["bodies"] == []  # the redirect's target never heard from us
