"""The gateway's HTTP API and review page against the real stack: an event POSTed over HTTP is
published by the pipeline, an invalid batch publishes nothing, and a reviewer's decision made on
the review page reaches the running publish stage."""

from __future__ import annotations

import asyncio
import copy
import io
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image

import gateway.ops.review
import gateway.ops.submit
import gateway.web.resources
from deploy.local.session import expected_job_ids
from gateway.ops.review import submit_decision
from gateway.web.app import MAX_BODY_BYTES, build_app
from processors import kafka_clients
from processors.config import Settings
from processors.eventlog.reader import EventLogReader
from processors.storage import ObjectStore
from processors.storage_keys import decided_key, pending_key
from schemas.serde import AvroSerde
from tests.fixtures.avro_samples import JOB_V1
from tests.support.catalog import events_for

pytestmark = pytest.mark.integration

JSON = {"Content-Type": "application/json"}
HOSTILE_TITLE = "Mug <script>alert('x')</script> & co"


@pytest.fixture
async def client(pipeline: Any) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(build_app(pipeline.settings))) as client:
        yield client


def _png(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), colour).save(buf, "PNG")
    return buf.getvalue()


def _park_held_job(store: ObjectStore, tag: str, prefix: str) -> tuple[dict[str, Any], bytes]:
    """Park a job whose quality gate failed under review/pending/, exactly as the publish stage
    does, with its generated image in storage. The session runs review policy "auto", so this is
    the direct way to get a held job without steering the generator into a bad image."""
    image = _png((200, 40, 40))
    job = copy.deepcopy(JOB_V1)
    job["job_id"] = f"api-{tag}-{uuid.uuid4().hex[:8]}"
    job["product"].update(sku=f"SKU-API-{tag}-{uuid.uuid4().hex[:6]}", title=HOSTILE_TITLE)
    job["asset_key"] = f"generated/tests/{job['job_id']}/0.png"
    job["quality"] = {
        "passed": False,
        "scores": {"preservation": 0.41, "blank": 0.12},
        "reasons": ["product preservation 0.41 is below 0.60"],
        "chosen_index": 0,
    }
    job["derivatives"] = []
    store.put_bytes(job["asset_key"], image, "image/png")
    store.put_bytes(pending_key(job["job_id"], prefix), AvroSerde("job").encode(job), "avro/binary")
    return job, image


@pytest.fixture
def hold_job(pipeline: Any) -> Iterator[Callable[[str], tuple[dict[str, Any], bytes]]]:
    """Held jobs for one test, in the session's own review queue, removed afterwards."""
    store = ObjectStore(pipeline.settings.storage)
    prefix = pipeline.settings.kafka.topic_prefix
    parked: list[dict[str, Any]] = []

    def hold(tag: str) -> tuple[dict[str, Any], bytes]:
        job, image = _park_held_job(store, tag, prefix)
        parked.append(job)
        return job, image

    yield hold
    for job in parked:
        for key in (pending_key(job["job_id"], prefix), decided_key(job["job_id"], prefix), job["asset_key"]):
            store.client.remove_object(store.bucket, key)


async def _wait_for_state(settings: Settings, job_id: str, state: str, timeout_s: float = 60) -> dict:
    reader = EventLogReader(settings)
    deadline = time.monotonic() + timeout_s
    while True:
        timeline = await reader.timeline(job_id)
        if any(event["state"] == state for event in timeline["events"]):
            return timeline
        assert time.monotonic() < deadline, f"no {state!r} event for {job_id} in {timeout_s}s: {timeline}"
        await asyncio.sleep(0.5)


async def test_posted_event_is_published(client: TestClient, pipeline: Any, catalog_server: Any) -> None:
    (event,) = events_for(catalog_server, [0], "api-post")
    (job_id,) = expected_job_ids([event])

    response = await client.post("/v1/events", json=event)
    assert response.status == 202, await response.text()
    assert await response.json() == {"accepted": 1, "event_ids": [event["event_id"]]}

    states = await asyncio.to_thread(pipeline.wait_for, [job_id], 120)
    assert states.get(job_id) == "published", states
    response = await client.get(f"/v1/jobs/{job_id}")
    assert response.status == 200
    timeline = await response.json()
    assert timeline["state"] == "published"
    assert ("publish", "published") in [(e["stage"], e["state"]) for e in timeline["events"]]

    response = await client.get("/v1/summary")
    assert response.status == 200
    assert isinstance(await response.json(), dict)


async def test_the_app_keeps_one_producer_and_one_event_log_reader(
    pipeline: Any, catalog_server: Any, hold_job: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Opened once when the app starts, used by every request, closed when it stops: not a
    broker connection per POST and an HTTP session per GET."""
    made = {"producers": 0, "readers": 0, "sessions": 0}
    make_producer, reader_init = kafka_clients.make_producer, EventLogReader.__init__
    new_session = EventLogReader._new_session

    def counted_producer(*args: Any, **kwargs: Any) -> Any:
        made["producers"] += 1
        return make_producer(*args, **kwargs)

    def counted_reader(self: EventLogReader, *args: Any) -> None:
        made["readers"] += 1
        reader_init(self, *args)

    def counted_session(self: EventLogReader) -> Any:
        made["sessions"] += 1
        return new_session(self)

    # Every way the gateway's code reaches a producer (real ones: these only count).
    for module in (kafka_clients, gateway.ops.submit, gateway.ops.review, gateway.web.resources):
        monkeypatch.setattr(module, "make_producer", counted_producer)
    monkeypatch.setattr(EventLogReader, "__init__", counted_reader)
    monkeypatch.setattr(EventLogReader, "_new_session", counted_session)

    (event,) = events_for(catalog_server, [1], "api-lifetime")
    job, _ = await asyncio.to_thread(hold_job, "lifetime")
    async with TestClient(TestServer(build_app(pipeline.settings))) as client:
        for _ in range(2):  # the second is the same event again: intake de-duplicates it
            assert (await client.post("/v1/events", json=event)).status == 202
            assert (await client.get("/v1/summary")).status == 200
            assert (await client.get(f"/v1/jobs/no-such-job-{uuid.uuid4().hex}")).status == 404
        decision = {"decision": "reject", "reviewer": "ana", "reason": "lifetime test"}
        assert (await client.post(f"/review/{job['job_id']}", json=decision)).status == 202
    assert made == {"producers": 1, "readers": 1, "sessions": 1}


async def test_invalid_batch_publishes_nothing(
    client: TestClient, pipeline: Any, catalog_server: Any
) -> None:
    valid, invalid = events_for(catalog_server, [2, 3], "api-batch")
    invalid["request"]["width"] = "wide"
    (valid_job,) = expected_job_ids([valid])

    response = await client.post("/v1/events", json={"events": [valid, invalid]})
    assert response.status == 400
    (error,) = (await response.json())["errors"]
    assert error["index"] == 1
    assert "width" in error["message"]

    # Other tests' jobs finish in a few seconds on this pipeline: had the valid event gone out,
    # intake would have recorded its job by now.
    for _ in range(8):
        assert await asyncio.to_thread(pipeline.states, [valid_job]) == {}
        await asyncio.sleep(1)


async def test_bad_bodies_are_refused_with_a_reason(client: TestClient) -> None:
    response = await client.post("/v1/events", data=b"sku=1&title=mug", headers=JSON)
    assert response.status == 400
    assert "not JSON" in (await response.json())["error"]

    response = await client.post("/v1/events", json=[1, 2])
    assert response.status == 400

    response = await client.post("/v1/events", data=b" " * (MAX_BODY_BYTES + 1), headers=JSON)
    assert response.status == 413


@pytest.fixture
async def bare_client(stack_settings: Settings) -> AsyncIterator[TestClient]:
    """The API bound to loopback, without a pipeline: for refusals that happen before Kafka."""
    async with TestClient(TestServer(build_app(stack_settings, "127.0.0.1"), host="127.0.0.1")) as client:
        yield client


async def test_events_must_be_json_from_this_site(bare_client: TestClient) -> None:
    event = {"event_id": "never-published"}
    # What another site's page can send without a CORS preflight: forms and text/plain.
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        response = await bare_client.post(
            "/v1/events", data=json.dumps(event).encode(), headers={"Content-Type": content_type}
        )
        assert response.status == 415, content_type
    response = await bare_client.post(
        "/v1/events", json=event, headers={"Origin": "https://elsewhere.example"}
    )
    assert response.status == 403
    # Same origin, or no Origin (curl, scripts), gets as far as validation.
    origin = f"http://{bare_client.host}:{bare_client.port}"
    for headers in ({"Origin": origin}, {}):
        response = await bare_client.post("/v1/events", json=event, headers=headers)
        assert response.status == 400, await response.text()


async def test_loopback_gateway_refuses_foreign_host_headers(bare_client: TestClient) -> None:
    # DNS rebinding: a page on attacker.example re-resolved to 127.0.0.1 sends its own name.
    for host in ("attacker.example", "attacker.example:8080", "127.0.0.1.nip.io", "x:y:z"):
        for method, path in (("GET", "/v1/summary"), ("GET", "/review"), ("POST", "/v1/events")):
            response = await bare_client.request(method, path, json={}, headers={"Host": host})
            assert response.status == 403, (host, path)
    for host in ("localhost:8080", "127.0.0.1", "[::1]:8080", "LocalHost", "127.0.0.2:1"):
        response = await bare_client.get("/healthz", headers={"Host": host})
        assert response.status == 200, host


async def test_gateway_bound_elsewhere_answers_its_own_name(stack_settings: Settings) -> None:
    # Bound to all interfaces the gateway is reached by many names; no loopback rule applies.
    async with TestClient(TestServer(build_app(stack_settings, "0.0.0.0"), host="127.0.0.1")) as client:
        response = await client.get("/healthz", headers={"Host": "lightbox.internal:8080"})
        assert response.status == 200


async def test_unknown_job_is_404(client: TestClient) -> None:
    assert (await client.get("/healthz")).status == 200
    response = await client.get(f"/v1/jobs/no-such-job-{uuid.uuid4().hex}")
    assert response.status == 404


async def test_reviewer_rejects_a_held_job(client: TestClient, pipeline: Any, hold_job: Any) -> None:
    job, image = await asyncio.to_thread(hold_job, "reject")
    job_id = job["job_id"]

    response = await client.get("/review")
    assert response.status == 200
    assert response.content_type == "text/html"
    page = await response.text()
    assert job["product"]["sku"] in page
    assert "Mug &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; co" in page
    assert "<script" not in page
    assert "product preservation 0.41 is below 0.60" in page

    response = await client.get(f"/review/{job_id}/image")
    assert response.status == 200
    assert response.content_type == "image/png"
    assert await response.read() == image
    assert (await client.get("/review/no-such-job/image")).status == 404

    url = f"/review/{job_id}"
    form = {"decision": "reject", "reviewer": "ana"}
    assert (await client.post(url, data=form)).status == 400
    assert (await client.post(url, data={**form, "reason": "x", "decision": "maybe"})).status == 400
    cross_site = await client.post(url, data=form, headers={"Origin": "https://elsewhere.example"})
    assert cross_site.status == 403
    assert (await client.post("/review/no-such-job", data={**form, "reason": "x"})).status == 404

    reason = "label text is cut off"
    response = await client.post(url, data={**form, "reason": reason}, allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"].startswith("/review")

    timeline = await _wait_for_state(pipeline.settings, job_id, "rejected")
    (rejected,) = [e for e in timeline["events"] if e["state"] == "rejected"]
    assert rejected["stage"] == "publish"
    assert rejected["detail"] == reason
    assert rejected["attributes"]["reviewer"] == "ana"


async def test_json_approval_publishes_a_held_job(client: TestClient, pipeline: Any, hold_job: Any) -> None:
    job, _ = await asyncio.to_thread(hold_job, "approve")
    response = await client.post(f"/review/{job['job_id']}", json={"decision": "approve", "reviewer": "bo"})
    assert response.status == 202
    assert (await response.json())["decision"] == "approve"
    await _wait_for_state(pipeline.settings, job["job_id"], "published")


async def test_decided_job_leaves_the_review_queue(client: TestClient, pipeline: Any, hold_job: Any) -> None:
    job, _ = await asyncio.to_thread(hold_job, "decided")
    decision = {"decision": "reject", "reviewer": "ana", "reason": "off-brand"}
    assert (await client.post(f"/review/{job['job_id']}", json=decision)).status == 202
    await _wait_for_state(pipeline.settings, job["job_id"], "rejected")
    assert job["product"]["sku"] not in await (await client.get("/review")).text()
    # The API answers a second decision itself: it could not take effect.
    response = await client.post(f"/review/{job['job_id']}", json={"decision": "approve", "reviewer": "bo"})
    assert response.status == 409
    assert (await response.json())["error"] == "already decided: reject by ana (off-brand)"
    form = {"decision": "approve", "reviewer": "bo"}
    assert (await client.post(f"/review/{job['job_id']}", data=form)).status == 409
    # A later, different decision cannot overturn the first: it is recorded and ignored.
    await asyncio.to_thread(submit_decision, pipeline.settings, job["job_id"], "APPROVE", "bob", "")
    await _wait_for_state(pipeline.settings, job["job_id"], "decision_ignored")
    timeline = await EventLogReader(pipeline.settings).timeline(job["job_id"])
    assert "published" not in [e["state"] for e in timeline["events"]]
    assert timeline["state"] == "rejected"


async def test_a_one_megabyte_reason_is_refused_at_entry_and_the_job_stays_held(
    client: TestClient, pipeline: Any, hold_job: Any
) -> None:
    job, _ = await asyncio.to_thread(hold_job, "huge-reason")
    url = f"/review/{job['job_id']}"
    limit = pipeline.settings.review.max_reason_chars
    response = await client.post(url, json={"decision": "reject", "reviewer": "ana", "reason": "x" * 2**20})
    assert response.status == 400
    body = await response.json()
    assert (body["field"], body["limit"]) == ("reason", limit)
    assert f"at most {limit} (review.max_reason_chars)" in body["error"]
    store = ObjectStore(pipeline.settings.storage)
    prefix = pipeline.settings.kafka.topic_prefix
    assert await asyncio.to_thread(store.exists, pending_key(job["job_id"], prefix)), "still held"
    # Nothing was sent: a decision within the limit is the first, and it takes effect.
    decision = {"decision": "reject", "reviewer": "ana", "reason": "x" * limit}
    assert (await client.post(url, json=decision)).status == 202
    timeline = await _wait_for_state(pipeline.settings, job["job_id"], "rejected")
    (rejected,) = [e for e in timeline["events"] if e["state"] == "rejected"]
    assert len(rejected["detail"]) <= limit
