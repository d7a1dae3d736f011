"""POST /v1/requests with an Idempotency-Key on the real stack (the same key and body: the same
answer and nothing published twice, counted on the Kafka topic itself; the same key with another
body: 422), an SRE's replay through the API, and the operational endpoints."""

from __future__ import annotations

import asyncio
import copy
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from confluent_kafka import Consumer, TopicPartition

from deploy.local.session import expected_job_ids
from gateway.ops.tokens import Role, TokenStore
from gateway.web.app import build_app
from processors.config import Settings
from schemas.topics import Topic, TopicNames
from tests.integration import test_gateway_api as shared
from tests.integration.test_gateway_api import assert_problem, bearer
from tests.support.catalog import events_for

pytestmark = pytest.mark.integration

gateway_settings, tokens = shared.gateway_settings, shared.tokens


@pytest.fixture
async def client(gateway_settings: Settings) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(build_app(gateway_settings))) as client:
        yield client


def catalog_messages(settings: Settings) -> int:
    """How many messages the catalog topic holds (the sum of its partitions' end offsets)."""
    topic = TopicNames(settings.kafka.topic_prefix)(Topic.CATALOG_EVENTS)
    consumer = Consumer({"bootstrap.servers": settings.kafka.bootstrap, "group.id": f"count-{uuid.uuid4()}"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions
        )
    finally:
        consumer.close()


async def test_the_same_key_and_body_get_the_same_answer_and_one_publish(
    client: TestClient, gateway_settings: Settings, catalog_server: Any, tokens: dict[str, str]
) -> None:
    (event,) = events_for(catalog_server, [4], "idem")
    key = f"order-{uuid.uuid4()}"
    headers = {**bearer(tokens["submitter"]), "Idempotency-Key": key}
    before = await asyncio.to_thread(catalog_messages, gateway_settings)

    first = await client.post("/v1/requests", json=event, headers=headers)
    assert first.status == 202, await first.text()
    answer = await first.json()
    assert answer["job_ids"] == expected_job_ids([event])
    # Sent again at once (a client retrying after a timeout) and concurrently: one publish.
    again = await asyncio.gather(
        *(client.post("/v1/requests", json=event, headers=headers) for _ in range(3))
    )
    for response in again:
        assert response.status == 202
        assert await response.json() == answer
        assert response.headers["Idempotent-Replayed"] == "true"
    assert await asyncio.to_thread(catalog_messages, gateway_settings) == before + 1

    # Key order and whitespace are not a different body.
    reordered = dict(reversed(list(event.items())))
    assert (await client.post("/v1/requests", json=reordered, headers=headers)).status == 202
    # Another body under the same key is refused, naming the header; nothing is published.
    other = copy.deepcopy(event)
    other["product"]["title"] = "Another mug"
    problem = await assert_problem(await client.post("/v1/requests", json=other, headers=headers), 422)
    assert problem["field"] == "Idempotency-Key"
    assert await asyncio.to_thread(catalog_messages, gateway_settings) == before + 1
    # Keys are per caller: the same key from another token is a request of its own.
    admin = {**bearer(tokens["admin"]), "Idempotency-Key": key}
    assert (await client.post("/v1/requests", json=other, headers=admin)).status == 202
    assert await asyncio.to_thread(catalog_messages, gateway_settings) == before + 2
    # ...even when the other token carries the same name: names are labels, not callers.
    _, namesake = TokenStore.of(gateway_settings).create("submitter-bot", Role.SUBMITTER)
    twin = {**bearer(namesake), "Idempotency-Key": key}
    response = await client.post("/v1/requests", json=other, headers=twin)
    assert response.status == 202, await response.text()
    assert "Idempotent-Replayed" not in response.headers
    assert await asyncio.to_thread(catalog_messages, gateway_settings) == before + 3


async def test_a_refused_request_is_not_remembered(
    client: TestClient, catalog_server: Any, tokens: dict[str, str]
) -> None:
    """A key whose first try was refused for its content may carry the corrected request."""
    (event,) = events_for(catalog_server, [5], "idem-fix")
    headers = {**bearer(tokens["submitter"]), "Idempotency-Key": f"fix-{uuid.uuid4()}"}
    broken = copy.deepcopy(event)
    broken["request"]["template_id"] = "no-such-template"
    await assert_problem(await client.post("/v1/requests", json=broken, headers=headers), 422)
    assert (await client.post("/v1/requests", json=event, headers=headers)).status == 202
    bad_key = {**bearer(tokens["submitter"]), "Idempotency-Key": "a key with spaces"}
    await assert_problem(
        await client.post("/v1/requests", json=event, headers=bad_key), 400, "Idempotency-Key"
    )


async def test_an_sre_replays_a_published_job_with_another_model(
    client: TestClient, pipeline: Any, catalog_server: Any, tokens: dict[str, str]
) -> None:
    (event,) = events_for(catalog_server, [0], "replay")
    response = await client.post("/v1/requests", json=event, headers=bearer(tokens["submitter"]))
    (job_id,) = (await response.json())["job_ids"]
    assert (await asyncio.to_thread(pipeline.wait_for, [job_id], 120)).get(job_id) == "published"
    url, headers = f"/v1/jobs/{job_id}/replay", bearer(tokens["sre"])
    await assert_problem(
        await client.post(url, json={"from_stage": "nowhere"}, headers=headers), 400, "from_stage"
    )
    missing = f"/v1/jobs/no-such-job-{uuid.uuid4().hex}/replay"
    await assert_problem(await client.post(missing, json={"from_stage": "generate"}, headers=headers), 404)

    response = await client.post(
        url, json={"from_stage": "generate", "model": "replay-model"}, headers=headers
    )
    assert response.status == 202, await response.text()
    replay = await response.json()
    assert replay["replay_of"] == job_id and replay["job_id"] != job_id
    states = await asyncio.to_thread(pipeline.wait_for, [replay["job_id"]], 120)
    detail = await (await client.get(f"/v1/jobs/{replay['job_id']}", headers=headers)).json()
    assert states.get(replay["job_id"]) == "published", states
    assert detail["replay_of"] == job_id and detail["model"] == "replay-model"
    assert detail["lineage"]["route"]["model"] == "replay-model"


async def test_ready_when_every_dependency_answers_and_metrics_count_requests(
    client: TestClient, tokens: dict[str, str]
) -> None:
    response = await client.get("/readyz")
    assert response.status == 200, await response.text()
    assert (await response.json())["checks"] == {
        k: "ok" for k in ("kafka", "storage", "registry", "eventlog")
    }
    await client.get("/v1/jobs/unknown-job", headers=bearer(tokens["analyst"]))
    await client.get("/no/such/path")
    response = await client.get("/metrics", headers=bearer(tokens["sre"]))
    assert response.status == 200
    text = await response.text()
    assert 'lightbox_gateway_requests_total{method="GET",route="/v1/jobs/{job_id}",status="404"} 1.0' in text
    assert 'route="unmatched",status="404"' in text
    assert "lightbox_gateway_request_seconds_bucket" in text


async def test_readyz_names_the_dependency_that_is_down(gateway_settings: Settings, tmp_path: Any) -> None:
    """The registry and the event log pointed at ports nothing listens on: 503 naming both."""
    settings = gateway_settings.model_copy(
        update={
            "registry": gateway_settings.registry.model_copy(
                update={"url": "http://127.0.0.1:9/apis/ccompat/v7"}
            ),
            "clickhouse": gateway_settings.clickhouse.model_copy(update={"query_port": 9}),
            "gateway": gateway_settings.gateway.model_copy(update={"readiness_timeout_s": 1.0}),
        }
    )
    async with TestClient(TestServer(build_app(settings))) as client:
        problem = await assert_problem(await client.get("/readyz"), 503)
        assert problem["checks"]["kafka"] == "ok" and problem["checks"]["storage"] == "ok"
        assert problem["checks"]["registry"] != "ok" and problem["checks"]["eventlog"] != "ok"
        assert problem["detail"] == "not ready: registry, eventlog"


async def test_readiness_probes_share_one_round_of_checks(gateway_settings: Settings) -> None:
    """A registry that accepts connections and never answers: twenty probes at once wait on one
    round of checks (not twenty rounds of threads and sockets), and the answer is kept a while."""

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)

    hung = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = hung.sockets[0].getsockname()[1]
    settings = gateway_settings.model_copy(
        update={
            "registry": gateway_settings.registry.model_copy(
                update={"url": f"http://127.0.0.1:{port}/apis/ccompat/v7"}
            ),
            "gateway": gateway_settings.gateway.model_copy(
                update={"readiness_timeout_s": 1.0, "readiness_cache_s": 30.0}
            ),
        }
    )
    from gateway.web.health import READINESS

    try:
        app = build_app(settings)
        async with TestClient(TestServer(app)) as client:
            answers = await asyncio.gather(*(client.get("/readyz") for _ in range(20)))
            assert {a.status for a in answers} == {503}
            problem = await answers[0].json()
            assert problem["checks"]["registry"] == "no answer within 1.0s"
            assert app[READINESS].rounds == 1
            await assert_problem(await client.get("/readyz"), 503)  # kept: no new round
            assert app[READINESS].rounds == 1
    finally:
        hung.close()


async def test_a_storage_outage_is_503_not_500(
    gateway_settings: Settings, catalog_server: Any, tokens: dict[str, str]
) -> None:
    """Object storage refusing connections: the calls that need it answer 503 (try again)."""
    settings = gateway_settings.model_copy(
        update={"storage": gateway_settings.storage.model_copy(update={"endpoint": "127.0.0.1:9"})}
    )
    (event,) = events_for(catalog_server, [1], "storage-down")
    async with TestClient(TestServer(build_app(settings))) as client:
        headers = {**bearer(tokens["submitter"]), "Idempotency-Key": f"down-{uuid.uuid4()}"}
        await assert_problem(await client.post("/v1/requests", json=event, headers=headers), 503)
        decision = await client.post(
            "/v1/jobs/some-job/decision", json={"decision": "approve"}, headers=bearer(tokens["reviewer"])
        )
        await assert_problem(decision, 503)
