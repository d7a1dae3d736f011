"""The gateway's JSON API against the real stack: a request POSTed over HTTP is answered at once
with the job ids it makes and is published by the pipeline; the job's detail names its lineage
and hands out presigned URLs that really fetch the image; a reviewer's decision records the
token's name; every error is problem+json; the Host and Origin defences hold on every bind.

The fixtures here (tokens per role, the gateway's settings, held jobs) are shared with the other
test_gateway_* modules, which import them."""

from __future__ import annotations

import asyncio
import copy
import io
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image

import gateway.ops.review
import gateway.ops.submit
import gateway.web.resources
from deploy.local.session import expected_job_ids
from gateway.ops.review import submit_decision
from gateway.ops.tokens import Role, TokenStore
from gateway.web.app import MAX_BODY_BYTES, build_app
from processors import kafka_clients
from processors.config import Settings
from processors.eventlog.reader import EventLogReader
from processors.runtime.codec import Codec
from processors.storage import ObjectStore
from processors.storage_keys import decided_key, pending_key
from schemas.serde import AvroSerde
from schemas.topics import Topic, TopicNames
from tests.fixtures.avro_samples import JOB_V1
from tests.support.catalog import events_for

pytestmark = pytest.mark.integration

PROBLEM = "application/problem+json"
HOSTILE_TITLE = "Mug <script>alert('x')</script> & co"


# -- shared fixtures --------------------------------------------------------------------------


def with_gateway(settings: Settings, directory: Path, **gateway: Any) -> Settings:
    """These settings with the gateway's token file and session key under `directory`."""
    update = {
        "tokens_file": str(directory / "tokens.json"),
        "session_key_file": str(directory / "session.key"),
        **gateway,
    }
    return settings.model_copy(update={"gateway": settings.gateway.model_copy(update=update)})


def make_tokens(settings: Settings) -> dict[str, str]:
    """One token per role, named after it ("reviewer-ana" is the reviewer's name)."""
    store = TokenStore.of(settings)
    names = {Role.REVIEWER: "reviewer-ana"}
    return {str(role): store.create(names.get(role, f"{role}-bot"), role)[1] for role in Role}


@pytest.fixture(scope="session")
def gateway_settings(pipeline: Any, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return with_gateway(pipeline.settings, tmp_path_factory.mktemp("gateway"))


@pytest.fixture(scope="session")
def tokens(gateway_settings: Settings) -> dict[str, str]:
    return make_tokens(gateway_settings)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def client(gateway_settings: Settings) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(build_app(gateway_settings))) as client:
        yield client


def _png(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), colour).save(buf, "PNG")
    return buf.getvalue()


def park_held_job(store: ObjectStore, tag: str, prefix: str) -> tuple[dict[str, Any], bytes]:
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
        job, image = park_held_job(store, tag, prefix)
        parked.append(job)
        return job, image

    yield hold
    for job in parked:
        for key in (pending_key(job["job_id"], prefix), decided_key(job["job_id"], prefix), job["asset_key"]):
            store.client.remove_object(store.bucket, key)


async def wait_for_state(settings: Settings, job_id: str, state: str, timeout_s: float = 60) -> dict:
    reader = EventLogReader(settings)
    deadline = time.monotonic() + timeout_s
    while True:
        timeline = await reader.timeline(job_id)
        if any(event["state"] == state for event in timeline["events"]):
            return timeline
        assert time.monotonic() < deadline, f"no {state!r} event for {job_id} in {timeout_s}s: {timeline}"
        await asyncio.sleep(0.5)


async def assert_problem(response: aiohttp.ClientResponse, status: int, field: str | None = None) -> dict:
    """The response is a problem+json error of this status (naming this field, when given)."""
    body = await response.text()
    assert response.status == status, body
    assert response.content_type == PROBLEM, (response.content_type, body)
    problem = json.loads(body)
    assert problem["status"] == status
    assert problem["type"].startswith("/docs#problem-") and problem["title"] and problem["detail"]
    if field is not None:
        assert problem.get("field") == field, problem
    return problem


# -- requests in, jobs out --------------------------------------------------------------------


async def test_a_request_is_answered_with_its_job_ids_and_the_job_detail_fetches_the_image(
    client: TestClient, pipeline: Any, catalog_server: Any, tokens: dict[str, str]
) -> None:
    (event,) = events_for(catalog_server, [0], "api-request")
    expected = expected_job_ids([event])

    started = time.monotonic()
    response = await client.post("/v1/requests", json=event, headers=bearer(tokens["submitter"]))
    assert response.status == 202, await response.text()
    answer = await response.json()
    assert answer["job_ids"] == expected and answer["event_id"] == event["event_id"]
    assert time.monotonic() - started < 5, "answered at once, not when the job is done"

    (job_id,) = expected
    states = await asyncio.to_thread(pipeline.wait_for, [job_id], 120)
    assert states.get(job_id) == "published", states
    response = await client.get(f"/v1/jobs/{job_id}", headers=bearer(tokens["analyst"]))
    assert response.status == 200, await response.text()
    job = await response.json()
    assert job["state"] == "published" and job["sku"] == event["product"]["sku"]
    assert ("publish", "published") in [(e["stage"], e["state"]) for e in job["timeline"]]
    assert job["scores"] and all(isinstance(v, float) for v in job["scores"][-1]["scores"].values())
    lineage = job["lineage"]
    assert job["lineage_source"] == "published"
    assert lineage["event_id"] == event["event_id"] and lineage["generation"]["model"]
    assert lineage["references"], "the stored references it used"
    # Every published file, as a presigned URL that works without any credential.
    published = [a for a in job["assets"] if a["role"] == "published"]
    assert {a["key"].rsplit("/", 1)[-1] for a in published} == {
        *(d["key"].rsplit("/", 1)[-1] for d in lineage["derivatives"]),
        "lineage.json",
    }
    images = [a for a in published if a["key"].endswith((".png", ".jpg", ".webp"))]
    assert images
    # Each image's content credentials, as `lightbox verify` reads them from the stored bytes.
    for image in images:
        credentials = image["content_credentials"]
        assert (credentials["ok"], credentials["state"], credentials["failures"]) == (True, "Trusted", [])
        assert credentials["digital_source_type"] and credentials["signer"]
    assert all("content_credentials" not in a for a in published if a["key"].endswith(".json"))
    async with aiohttp.ClientSession() as plain:
        async with plain.get(images[0]["url"]) as fetched:
            assert fetched.status == 200
            data = await fetched.read()
        Image.open(io.BytesIO(data)).verify()
        # The signature covers the key: the same URL for another object is refused.
        forged = images[0]["url"].replace(images[0]["key"].rsplit("/", 1)[-1], "lineage.json")
        async with plain.get(forged) as refused:
            assert refused.status == 403


async def test_the_job_list_filters_and_pages(
    client: TestClient, pipeline: Any, catalog_server: Any, tokens: dict[str, str]
) -> None:
    """Through the event-log sink (embedded ClickHouse), as `lightbox run all` serves it."""
    events = events_for(catalog_server, [1, 2], "api-list")
    job_ids = expected_job_ids(events)
    for event in events:
        assert (
            await client.post("/v1/requests", json=event, headers=bearer(tokens["submitter"]))
        ).status == 202
    await asyncio.to_thread(pipeline.wait_for, job_ids, 120)
    headers = bearer(tokens["analyst"])
    sku = events[0]["product"]["sku"]
    response = await client.get("/v1/jobs", params={"sku": sku}, headers=headers)
    assert response.status == 200, await response.text()
    assert [j["job_id"] for j in (await response.json())["jobs"]] == job_ids[:1]
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(50):
        params = {"limit": "1", "state": "published", **({"cursor": cursor} if cursor else {})}
        page = await (await client.get("/v1/jobs", params=params, headers=headers)).json()
        seen += [j["job_id"] for j in page["jobs"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert set(job_ids) <= set(seen) and len(seen) == len(set(seen)), "every job once"
    await assert_problem(
        await client.get("/v1/jobs", params={"state": "nope"}, headers=headers), 400, "state"
    )
    await assert_problem(await client.get("/v1/jobs", params={"cursor": "x"}, headers=headers), 400, "cursor")


async def test_the_app_keeps_one_producer_and_one_event_log_reader(
    gateway_settings: Settings,
    catalog_server: Any,
    hold_job: Any,
    tokens: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
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
    async with TestClient(TestServer(build_app(gateway_settings))) as client:
        for _ in range(2):  # the second is the same event again: intake de-duplicates it
            response = await client.post("/v1/events", json=event, headers=bearer(tokens["submitter"]))
            assert response.status == 202
            assert (await client.get("/v1/summary", headers=bearer(tokens["analyst"]))).status == 200
            missing = await client.get(
                f"/v1/jobs/no-such-job-{uuid.uuid4().hex}", headers=bearer(tokens["analyst"])
            )
            assert missing.status == 404
        decision = {"decision": "reject", "reason": "lifetime test"}
        response = await client.post(
            f"/v1/jobs/{job['job_id']}/decision", json=decision, headers=bearer(tokens["reviewer"])
        )
        assert response.status == 202
    assert made == {"producers": 1, "readers": 1, "sessions": 1}


async def test_an_invalid_batch_publishes_nothing(
    client: TestClient, pipeline: Any, catalog_server: Any, tokens: dict[str, str]
) -> None:
    valid, invalid = events_for(catalog_server, [2, 3], "api-batch")
    invalid["request"]["width"] = "wide"
    (valid_job,) = expected_job_ids([valid])

    response = await client.post(
        "/v1/events", json={"events": [valid, invalid]}, headers=bearer(tokens["submitter"])
    )
    problem = await assert_problem(response, 400)
    (error,) = problem["errors"]
    assert error["index"] == 1 and "width" in error["detail"]

    # Other tests' jobs finish in a few seconds on this pipeline: had the valid event gone out,
    # intake would have recorded its job by now.
    for _ in range(8):
        assert await asyncio.to_thread(pipeline.states, [valid_job]) == {}
        await asyncio.sleep(1)


async def test_requests_are_validated_as_intake_validates_them(
    client: TestClient, catalog_server: Any, tokens: dict[str, str]
) -> None:
    headers = bearer(tokens["submitter"])
    (event,) = events_for(catalog_server, [3], "api-invalid")
    wrong_type = copy.deepcopy(event)
    wrong_type["product"]["sku"] = 5
    await assert_problem(
        await client.post("/v1/requests", json=wrong_type, headers=headers), 400, "product.sku"
    )
    # Fits the schema, but intake would reject it: 422 with intake's reasons.
    unknown_template = copy.deepcopy(event)
    unknown_template["request"]["template_id"] = "no-such-template"
    problem = await assert_problem(
        await client.post("/v1/requests", json=unknown_template, headers=headers), 422, "request.template_id"
    )
    assert problem["errors"][0]["reason"] == "unknown_template"
    too_long = copy.deepcopy(event)
    too_long["product"]["title"] = "x" * 100_000
    problem = await assert_problem(await client.post("/v1/requests", json=too_long, headers=headers), 400)
    assert "title" in problem["detail"]


async def test_bad_bodies_are_refused_with_problem_details(
    client: TestClient, tokens: dict[str, str]
) -> None:
    headers = bearer(tokens["submitter"])
    json_type = {**headers, "Content-Type": "application/json"}
    await assert_problem(await client.post("/v1/requests", data=b"sku=1&title=mug", headers=json_type), 400)
    await assert_problem(await client.post("/v1/requests", json=[1, 2], headers=headers), 400)
    await assert_problem(await client.post("/v1/requests", data=b"[" * 100_000, headers=json_type), 400)
    too_big = await client.post("/v1/events", data=b" " * (MAX_BODY_BYTES + 1), headers=json_type)
    await assert_problem(too_big, 413)
    await assert_problem(await client.post("/v1/requests", data=b" " * (2**20 + 1), headers=json_type), 413)
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        response = await client.post(
            "/v1/requests", data=b"{}", headers={**headers, "Content-Type": content_type}
        )
        await assert_problem(response, 415)
    # aiohttp's own answers, as problem details too.
    await assert_problem(await client.get("/no/such/route"), 404)
    response = await client.put("/v1/requests", json={}, headers=headers)
    await assert_problem(response, 405)
    assert "POST" in response.headers["Allow"]


# -- review decisions -------------------------------------------------------------------------


async def test_a_decision_records_the_token_name_as_reviewer(
    client: TestClient, pipeline: Any, hold_job: Any, tokens: dict[str, str]
) -> None:
    job, _ = await asyncio.to_thread(hold_job, "approve")
    url, headers = f"/v1/jobs/{job['job_id']}/decision", bearer(tokens["reviewer"])
    # The reviewer is never a field the client sends.
    response = await client.post(url, json={"decision": "approve", "reviewer": "mallory"}, headers=headers)
    await assert_problem(response, 400, "reviewer")
    await assert_problem(await client.post(url, json={"decision": "reject"}, headers=headers), 400, "reason")
    await assert_problem(await client.post(url, json={"decision": "maybe"}, headers=headers), 400, "decision")
    missing = f"/v1/jobs/no-such-job-{uuid.uuid4().hex}/decision"
    await assert_problem(await client.post(missing, json={"decision": "approve"}, headers=headers), 404)

    response = await client.post(url, json={"decision": "approve"}, headers=headers)
    assert response.status == 202, await response.text()
    assert (await response.json())["reviewer"] == "reviewer-ana"
    timeline = await wait_for_state(pipeline.settings, job["job_id"], "published")
    (approved,) = [e for e in timeline["events"] if e["state"] == "approved"]
    assert approved["attributes"]["reviewer"] == "reviewer-ana"


async def test_a_decided_job_answers_409_with_the_first_decision(
    client: TestClient, pipeline: Any, hold_job: Any, tokens: dict[str, str]
) -> None:
    job, _ = await asyncio.to_thread(hold_job, "decided")
    url, headers = f"/v1/jobs/{job['job_id']}/decision", bearer(tokens["reviewer"])
    decision = {"decision": "reject", "reason": "off-brand"}
    assert (await client.post(url, json=decision, headers=headers)).status == 202
    await wait_for_state(pipeline.settings, job["job_id"], "rejected")
    response = await client.post(url, json={"decision": "approve"}, headers=headers)
    problem = await assert_problem(response, 409)
    assert problem["detail"] == "already decided: reject by reviewer-ana (off-brand)"
    # A later, different decision cannot overturn the first: it is recorded and ignored.
    await asyncio.to_thread(submit_decision, pipeline.settings, job["job_id"], "APPROVE", "bob", "")
    await wait_for_state(pipeline.settings, job["job_id"], "decision_ignored")
    timeline = await EventLogReader(pipeline.settings).timeline(job["job_id"])
    assert "published" not in [e["state"] for e in timeline["events"]]


async def test_a_one_megabyte_reason_is_refused_at_entry_and_the_job_stays_held(
    client: TestClient, pipeline: Any, hold_job: Any, tokens: dict[str, str]
) -> None:
    job, _ = await asyncio.to_thread(hold_job, "huge-reason")
    url, headers = f"/v1/jobs/{job['job_id']}/decision", bearer(tokens["reviewer"])
    limit = pipeline.settings.review.max_reason_chars
    response = await client.post(url, json={"decision": "reject", "reason": "x" * 2**15}, headers=headers)
    problem = await assert_problem(response, 400, "reason")
    assert problem["limit"] == limit and f"at most {limit} (review.max_reason_chars)" in problem["detail"]
    response = await client.post(url, json={"decision": "reject", "reason": "x" * 2**20}, headers=headers)
    await assert_problem(response, 413)
    store = ObjectStore(pipeline.settings.storage)
    prefix = pipeline.settings.kafka.topic_prefix
    assert await asyncio.to_thread(store.exists, pending_key(job["job_id"], prefix)), "still held"
    decision = {"decision": "reject", "reason": "x" * limit}
    assert (await client.post(url, json=decision, headers=headers)).status == 202
    timeline = await wait_for_state(pipeline.settings, job["job_id"], "rejected")
    (rejected,) = [e for e in timeline["events"] if e["state"] == "rejected"]
    assert len(rejected["detail"]) <= limit


def record_event(settings: Settings, job: dict[str, Any], stage: str, state: str, **attributes: str) -> None:
    """A pipeline event for this job on the events topic, as a stage writes it; the session's
    event-log sink stores it."""
    value = {
        "event_id": f"{job['job_id']}-{stage}-{state}-{uuid.uuid4().hex[:6]}",
        "job_id": job["job_id"],
        "stage": stage,
        "state": state,
        "at": int(time.time() * 1000),
        "duration_ms": 1.0,
        "reason": "",
        "detail": "",
        "attempt": 0,
        "attributes": attributes,
        "submitted_at": None,
        "worker": "test",
    }
    topic = TopicNames(settings.kafka.topic_prefix)(Topic.PIPELINE_EVENTS)
    payload = Codec.of(settings).serde(Topic.PIPELINE_EVENTS).encode(value)
    kafka_clients.produce_and_confirm(
        kafka_clients.make_producer(settings), [(topic, job["job_id"].encode(), payload, None)]
    )


async def test_a_held_job_detail_serves_its_held_record_and_image(
    client: TestClient, hold_job: Any, pipeline: Any, tokens: dict[str, str]
) -> None:
    """A job waiting for review: its lineage is the held record (quality and all), and the
    generated image it is held with comes back through its presigned URL."""
    job, image = await asyncio.to_thread(hold_job, "detail")
    await asyncio.to_thread(
        record_event, pipeline.settings, job, "quality", "completed",
        **{"score.preservation": "0.4100", "needs_review": "true", "asset_key": job["asset_key"]},
    )  # fmt: skip
    await asyncio.to_thread(record_event, pipeline.settings, job, "publish", "in_review")
    await wait_for_state(pipeline.settings, job["job_id"], "in_review")
    response = await client.get(f"/v1/jobs/{job['job_id']}", headers=bearer(tokens["reviewer"]))
    assert response.status == 200, await response.text()
    detail = await response.json()
    assert detail["state"] == "in_review" and detail["lineage_source"] == "held"
    assert detail["lineage"]["quality"]["reasons"] == ["product preservation 0.41 is below 0.60"]
    (verdict,) = detail["scores"]
    assert verdict == {**verdict, "passed": False, "scores": {"preservation": 0.41}}
    (asset,) = detail["assets"]
    assert (asset["role"], asset["key"]) == ("generated", job["asset_key"])
    async with aiohttp.ClientSession() as plain, plain.get(asset["url"]) as fetched:
        assert fetched.status == 200
        assert await fetched.read() == image


# -- who the gateway answers ------------------------------------------------------------------


@pytest.fixture
async def bare_client(stack_settings: Settings, tmp_path: Path) -> AsyncIterator[TestClient]:
    """The API bound to loopback, without a pipeline: for refusals that happen before Kafka."""
    settings = with_gateway(stack_settings, tmp_path)
    make_tokens(settings)
    async with TestClient(TestServer(build_app(settings, "127.0.0.1"), host="127.0.0.1")) as client:
        yield client


async def test_writes_from_another_site_are_refused(bare_client: TestClient, tmp_path: Path) -> None:
    response = await bare_client.post(
        "/v1/requests", json={}, headers={"Origin": "https://elsewhere.example"}
    )
    await assert_problem(response, 403)
    response = await bare_client.post("/v1/session", json={"token": "x"}, headers={"Origin": "null"})
    await assert_problem(response, 403)
    # Same origin, or no Origin (curl, scripts), gets as far as authentication.
    origin = f"http://{bare_client.host}:{bare_client.port}"
    for headers in ({"Origin": origin}, {}):
        await assert_problem(await bare_client.post("/v1/requests", json={}, headers=headers), 401)


async def test_foreign_host_headers_are_refused_on_loopback(bare_client: TestClient) -> None:
    # DNS rebinding: a page on attacker.example re-resolved to 127.0.0.1 sends its own name.
    for host in ("attacker.example", "attacker.example:8080", "127.0.0.1.nip.io", "x:y:z"):
        for method, path in (("GET", "/healthz"), ("GET", "/v1/jobs"), ("POST", "/v1/requests")):
            response = await bare_client.request(method, path, json={}, headers={"Host": host})
            await assert_problem(response, 403)
    for host in ("localhost:8080", "127.0.0.1", "[::1]:8080", "LocalHost", "127.0.0.2:1"):
        response = await bare_client.get("/healthz", headers={"Host": host})
        assert response.status == 200, host


async def test_off_loopback_only_the_allowed_names_are_answered(
    stack_settings: Settings, tmp_path: Path
) -> None:
    """Bound to all interfaces, the Host defence still holds: the allowlist names the gateway."""
    settings = with_gateway(stack_settings, tmp_path, allowed_hosts=["lightbox.internal", ".corp.example"])
    async with TestClient(TestServer(build_app(settings, "0.0.0.0"), host="127.0.0.1")) as client:
        for host in ("lightbox.internal:8080", "corp.example", "gw.corp.example", "127.0.0.1"):
            assert (await client.get("/healthz", headers={"Host": host})).status == 200, host
        for host in ("attacker.example", "lightbox.internal.attacker.example", "evilcorp.example", ""):
            await assert_problem(await client.get("/healthz", headers={"Host": host}), 403)


async def test_unknown_job_is_404_and_a_bad_id_400(client: TestClient, tokens: dict[str, str]) -> None:
    headers = bearer(tokens["analyst"])
    await assert_problem(await client.get(f"/v1/jobs/no-such-job-{uuid.uuid4().hex}", headers=headers), 404)
    await assert_problem(await client.get(f"/v1/jobs/{'x' * 300}", headers=headers), 400, "job_id")
    # Any text is one path segment on its way to the event log, not a path or a query of its own.
    for job_id in ("?", "a%2Fb", "%25", "%23x", "..", "a b"):
        await assert_problem(await client.get(f"/v1/jobs/{job_id}", headers=headers), 404)
