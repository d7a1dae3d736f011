"""Who may do what through the gateway, on the real stack: every route checks its role (a
submitter cannot approve, an analyst cannot submit, no token is 401, a revoked token stops
working at once), and a browser session carries an HttpOnly, SameSite=Strict cookie whose writes
need the session's CSRF token."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.ops.tokens import Role, TokenStore
from gateway.web.app import build_app
from gateway.web.auth import CSRF_HEADER, SESSION_COOKIE
from processors.config import Settings
from tests.integration import test_gateway_api as shared
from tests.integration.test_gateway_api import assert_problem, bearer
from tests.support.catalog import events_for

pytestmark = pytest.mark.integration

# The gateway fixtures of test_gateway_api (tokens per role, settings, held jobs).
gateway_settings, tokens, hold_job = shared.gateway_settings, shared.tokens, shared.hold_job


@pytest.fixture
async def client(gateway_settings: Settings) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(build_app(gateway_settings))) as client:
        yield client


# (method, path, body, the roles that may besides admin). Bodies are invalid on purpose where
# the call would otherwise change something: a role that may gets past the check to 4xx.
ROUTES: list[tuple[str, str, Any, set[str]]] = [
    ("POST", "/v1/requests", {}, {"submitter"}),
    ("POST", "/v1/events", [], {"submitter"}),
    ("POST", "/v1/jobs/nope/decision", {"decision": "approve"}, {"reviewer"}),
    ("POST", "/v1/jobs/nope/replay", {"from_stage": "nowhere"}, {"sre"}),
    ("GET", "/metrics", None, {"sre", "analyst"}),
    ("GET", "/v1/jobs?state=nope", None, {"submitter", "reviewer", "sre", "analyst"}),
    ("GET", "/v1/jobs/nope", None, {"submitter", "reviewer", "sre", "analyst"}),
    ("GET", "/v1/summary?since_ms=x", None, {"submitter", "reviewer", "sre", "analyst"}),
    ("GET", "/v1/whoami", None, {"submitter", "reviewer", "sre", "analyst"}),
]


async def test_every_route_checks_its_role(client: TestClient, tokens: dict[str, str]) -> None:
    for method, path, body, allowed in ROUTES:
        response = await client.request(method, path, json=body)
        await assert_problem(response, 401)
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        for role in Role:
            response = await client.request(method, path, json=body, headers=bearer(tokens[str(role)]))
            if str(role) in allowed or role is Role.ADMIN:
                assert response.status not in (401, 403), (method, path, role, await response.text())
            else:
                problem = await assert_problem(response, 403)
                assert str(role) in problem["detail"], problem


async def test_a_submitter_cannot_approve_and_an_analyst_cannot_submit(
    client: TestClient, hold_job: Any, catalog_server: Any, tokens: dict[str, str], pipeline: Any
) -> None:
    job, _ = await asyncio.to_thread(hold_job, "roles")
    url = f"/v1/jobs/{job['job_id']}/decision"
    response = await client.post(url, json={"decision": "approve"}, headers=bearer(tokens["submitter"]))
    await assert_problem(response, 403)
    (event,) = events_for(catalog_server, [0], "auth-analyst")
    response = await client.post("/v1/requests", json=event, headers=bearer(tokens["analyst"]))
    await assert_problem(response, 403)
    # Nothing of either reached the pipeline: the job is still held and the event unknown.
    assert await asyncio.to_thread(pipeline.states, [job["job_id"]]) == {}
    # A reviewer may (the same request, the right role).
    response = await client.post(url, json={"decision": "approve"}, headers=bearer(tokens["reviewer"]))
    assert response.status == 202, await response.text()


async def test_bad_and_revoked_tokens_are_401(client: TestClient, gateway_settings: Settings) -> None:
    store = TokenStore.of(gateway_settings)
    record, token = store.create(f"temp-{uuid.uuid4().hex[:6]}", Role.ANALYST)
    assert (await client.get("/v1/whoami", headers=bearer(token))).status == 200
    for header in (
        f"Bearer {token}x",
        "Bearer ",
        f"Basic {token}",
        "Bearer lbx_0000000000000000_" + "A" * 43,
    ):
        await assert_problem(await client.get("/v1/whoami", headers={"Authorization": header}), 401)
    store.revoke(record.token_id)
    # The gateway re-reads the token file when it changes: no restart, no grace period.
    await assert_problem(await client.get("/v1/whoami", headers=bearer(token)), 401)


async def test_a_flood_of_wrong_secrets_for_one_token_is_refused_without_hashing(
    client: TestClient, gateway_settings: Settings
) -> None:
    from gateway.web.auth import WRONG_SECRETS

    store = TokenStore.of(gateway_settings)
    _, token = store.create(f"guessed-{uuid.uuid4().hex[:6]}", Role.ANALYST)
    secret = token.removeprefix("lbx_")[17:]  # lbx_<16 hex id>_<secret>
    wrong = token.removesuffix(secret) + "B" * len(secret)
    for _ in range(WRONG_SECRETS):
        await assert_problem(await client.get("/v1/whoami", headers=bearer(wrong)), 401)
    refused = await client.get("/v1/whoami", headers=bearer(wrong))
    problem = await assert_problem(refused, 429)
    assert int(refused.headers["Retry-After"]) > 0
    assert "wrong secrets for this token" in problem["detail"]
    # The login form is the same check.
    await assert_problem(await client.post("/v1/session", json={"token": wrong}), 429)


async def test_a_session_cookie_is_httponly_strict_and_its_writes_need_csrf(
    client: TestClient, tokens: dict[str, str]
) -> None:
    await assert_problem(await client.post("/v1/session", json={"token": "lbx_nope"}), 401)
    response = await client.post("/v1/session", json={"token": tokens["submitter"]})
    assert response.status == 200, await response.text()
    session = await response.json()
    assert session["name"] == "submitter-bot" and session["csrf_token"]
    cookie = response.cookies[SESSION_COOKIE]
    assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/"
    assert not cookie["secure"], "plain HTTP on loopback: a Secure cookie would never come back"
    assert tokens["submitter"] not in cookie.value, "the cookie never carries the token"

    # The client keeps the cookie: reads work as that identity.
    whoami = await client.get("/v1/whoami")
    assert (await whoami.json()) == {"name": "submitter-bot", "role": "submitter"}
    # A write without the CSRF token is refused even from this site; with it, it passes the check.
    await assert_problem(await client.post("/v1/requests", json={}), 403)
    response = await client.post("/v1/requests", json={}, headers={CSRF_HEADER: "forged"})
    await assert_problem(response, 403)
    response = await client.post("/v1/requests", json={}, headers={CSRF_HEADER: session["csrf_token"]})
    await assert_problem(response, 400)  # past authentication and CSRF: the body is what is wrong
    # A tampered cookie is no session.
    client.session.cookie_jar.clear()
    for value in (cookie.value[:-2] + "xx", cookie.value.replace(".", "x", 1), "v1.a.b.9999999999.c"):
        response = await client.get("/v1/whoami", headers={"Cookie": f"{SESSION_COOKIE}={value}"})
        await assert_problem(response, 401)


async def test_sessions_are_secure_behind_a_tls_proxy(
    gateway_settings: Settings, tokens: dict[str, str]
) -> None:
    settings = gateway_settings.model_copy(
        update={"gateway": gateway_settings.gateway.model_copy(update={"behind_proxy": True})}
    )
    async with TestClient(TestServer(build_app(settings))) as client:
        response = await client.post("/v1/session", json={"token": tokens["reviewer"]})
        assert response.status == 200
        assert response.cookies[SESSION_COOKIE]["secure"]


async def test_logging_out_ends_the_session_for_every_copy_of_its_cookie(
    client: TestClient, gateway_settings: Settings, tokens: dict[str, str]
) -> None:
    response = await client.post("/v1/session", json={"token": tokens["reviewer"]})
    assert response.status == 200, await response.text()
    stolen = response.cookies[SESSION_COOKIE].value
    as_stolen = {"Cookie": f"{SESSION_COOKIE}={stolen}"}
    # Another gateway of the same home (a second replica) takes the same cookie...
    async with TestClient(TestServer(build_app(gateway_settings))) as other:
        assert (await other.get("/v1/whoami", headers=as_stolen)).status == 200
        # ...until its owner logs out: the cookie is cleared, and a copy of it is refused on both.
        response = await client.delete("/v1/session")
        assert response.status == 204
        assert response.cookies[SESSION_COOKIE].value == ""
        client.session.cookie_jar.clear()
        await assert_problem(await client.get("/v1/whoami", headers=as_stolen), 401)
        await assert_problem(await other.get("/v1/whoami", headers=as_stolen), 401)
    # The token itself stays good: a new login is a new session.
    response = await client.post("/v1/session", json={"token": tokens["reviewer"]})
    assert response.status == 200
    assert (await client.get("/v1/whoami")).status == 200
