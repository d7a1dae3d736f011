"""The gateway's pages over HTTP against the real stack: logging in with a token, what each role
may open, CSRF on the review form, the decision recorded under the identity's name, images
streamed from storage (and only a job's own), and the dashboard's data from real events.

The browser walk through the same pages is tests/browser."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp.test_utils import TestClient, TestServer

from deploy.local.session import expected_job_ids
from gateway.ops.tokens import Role
from gateway.web.app import build_app
from processors.config import Settings
from processors.storage import ObjectStore
from processors.storage_keys import decided_key, pending_key
from schemas.serde import AvroSerde
from tests.browser.helpers import HOSTILE_TITLE, make_token, park_held_job, remove_parked, with_own_tokens
from tests.support.catalog import events_for

pytestmark = pytest.mark.integration

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def settings(pipeline: Any, tmp_path: Path) -> Settings:
    return with_own_tokens(pipeline.settings, tmp_path)


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(build_app(settings), host="127.0.0.1")) as client:
        yield client


@pytest.fixture
def held(settings: Settings) -> Iterator[Callable[[str], tuple[dict[str, Any], bytes, bytes]]]:
    store = ObjectStore(settings.storage)
    prefix = settings.kafka.topic_prefix
    parked: list[dict[str, Any]] = []

    def hold(tag: str) -> tuple[dict[str, Any], bytes, bytes]:
        job, image, reference = park_held_job(store, prefix, tag)
        parked.append(job)
        return job, image, reference

    yield hold
    for job in parked:
        remove_parked(store, prefix, job)


async def _log_in(client: TestClient, token: str, next_url: str = "") -> str:
    """Log in through the form; the session cookie is kept by the client. Returns the redirect."""
    response = await client.post("/login", data={"token": token, "next": next_url}, allow_redirects=False)
    assert response.status == 303, await response.text()
    return response.headers["Location"]


async def _csrf(client: TestClient, path: str = "/review") -> str:
    response = await client.get(path)
    assert response.status == 200, await response.text()
    match = CSRF.search(await response.text())
    assert match, "the page's forms carry no CSRF token"
    return match.group(1)


async def test_pages_send_a_browser_without_a_session_to_log_in(client: TestClient) -> None:
    for path in ("/review", "/dashboard", "/jobs/some-job"):
        response = await client.get(path, allow_redirects=False)
        assert response.status == 303, path
        location = urlsplit(response.headers["Location"])
        assert (location.path, parse_qs(location.query)) == ("/login", {"next": [path]})
    response = await client.get("/login?next=%2Freview")
    assert response.status == 200
    assert 'name="token"' in await response.text()
    # The JSON data route answers like the API: problem+json, no redirect.
    response = await client.get("/dashboard/data", allow_redirects=False)
    assert response.status == 401
    assert response.content_type == "application/problem+json"


async def test_login_sets_an_httponly_strict_session_cookie(client: TestClient, settings: Settings) -> None:
    response = await client.post("/login", data={"token": "lbx_0123456789abcdef_" + "x" * 43})
    assert response.status == 401
    assert "not valid" in await response.text()
    assert "lightbox_session" not in response.cookies

    token = make_token(settings, "ana", Role.REVIEWER)
    response = await client.post("/login", data={"token": token, "next": "/review"}, allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"] == "/review"
    cookie = response.cookies["lightbox_session"]
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Strict"
    assert token not in cookie.value  # the session names the token, never carries it
    page = await client.get("/review")
    assert page.status == 200
    assert "ana" in await page.text()


async def test_login_never_redirects_off_site(client: TestClient, settings: Settings) -> None:
    token = make_token(settings, "ana", Role.REVIEWER)
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example", "review"):
        assert await _log_in(client, token, target) == "/review", target


async def test_each_role_sees_only_its_pages(client: TestClient, settings: Settings) -> None:
    await _log_in(client, make_token(settings, "al", Role.ANALYST))
    assert (await client.get("/review")).status == 403
    assert (await client.get("/dashboard")).status == 200
    assert (await client.get("/dashboard/data?window_s=3600")).status == 200

    client.session.cookie_jar.clear()
    await _log_in(client, make_token(settings, "ana", Role.REVIEWER))
    response = await client.get("/dashboard")
    assert response.status == 403
    assert "this page is for" in await response.text()
    assert (await client.get("/dashboard/data?window_s=3600")).status == 403
    assert (await client.get("/review")).status == 200


async def test_review_page_shows_the_held_job_beside_its_product_reference(
    client: TestClient, settings: Settings, held: Any
) -> None:
    job, image, reference = await asyncio.to_thread(held, "grid")
    await _log_in(client, make_token(settings, "ana", Role.REVIEWER))
    response = await client.get("/review")
    html = await response.text()
    assert job["job_id"] in html
    assert "&lt;script&gt;" in html and HOSTILE_TITLE not in html  # catalog text is escaped
    assert "preservation 0.410" in html and "below 0.60" in html
    assert f'href="/jobs/{job["job_id"]}"' in html  # the lineage, one click away
    assert "<kbd>a</kbd>" in html  # the shortcuts are shown
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Frame-Options"] == "DENY"

    generated = await client.get(f"/review/{job['job_id']}/image")
    assert generated.status == 200
    assert generated.content_type == "image/png"
    assert await generated.read() == image
    stored = await client.get(f"/review/{job['job_id']}/reference")
    assert stored.status == 200
    assert await stored.read() == reference
    assert stored.headers["X-Content-Type-Options"] == "nosniff"


async def test_a_decision_form_needs_the_sessions_csrf_token(
    client: TestClient, settings: Settings, held: Any
) -> None:
    job, _, _ = await asyncio.to_thread(held, "csrf")
    await _log_in(client, make_token(settings, "ana", Role.REVIEWER))
    for token in ("", "forged-token"):
        response = await client.post(
            f"/review/{job['job_id']}",
            data={"decision": "approve", "csrf_token": token},
            allow_redirects=False,
        )
        assert response.status == 403
        assert "CSRF" in await response.text()
    store = ObjectStore(settings.storage)
    prefix = settings.kafka.topic_prefix
    assert await asyncio.to_thread(store.exists, pending_key(job["job_id"], prefix))


async def test_a_rejection_needs_a_listed_reason_code(
    client: TestClient, settings: Settings, held: Any
) -> None:
    job, _, _ = await asyncio.to_thread(held, "codes")
    await _log_in(client, make_token(settings, "ana", Role.REVIEWER))
    csrf = await _csrf(client)
    refusals = (
        ({"reason_code": "i-just-dont-like-it"}, "a rejection needs a reason code, one of: product_altered"),
        ({"reason_code": "other"}, "needs a note saying why"),
        ({"reason_code": "other", "note": "x" * 5000}, "note: 5000 characters, at most 1982"),
    )
    for fields, why in refusals:
        response = await client.post(
            f"/review/{job['job_id']}", data={"decision": "reject", "csrf_token": csrf, **fields}
        )
        assert response.status == 400, fields
        assert why in await response.text()
    # JSON decisions belong to the API, which answers in problem+json.
    response = await client.post(f"/review/{job['job_id']}", json={"decision": "approve"})
    assert response.status == 415
    assert "/v1/jobs/" in (await response.json())["detail"]


async def test_the_decision_records_the_logged_in_name_not_a_posted_one(
    client: TestClient, settings: Settings, held: Any
) -> None:
    """The running publish stage acts on the decision: the decided record names the token."""
    job, image, _ = await asyncio.to_thread(held, "identity")
    await _log_in(client, make_token(settings, "ana-pages", Role.REVIEWER))
    csrf = await _csrf(client)
    response = await client.post(
        f"/review/{job['job_id']}",
        data={
            "decision": "reject",
            "reason_code": "visual_artifacts",
            "note": "seams at the edge",
            "reviewer": "mallory",
            "csrf_token": csrf,
        },
        allow_redirects=False,
    )
    assert response.status == 303, await response.text()
    assert response.headers["Location"] == f"/review?decided={job['job_id']}"

    store, serde = ObjectStore(settings.storage), AvroSerde("job")
    key = decided_key(job["job_id"], settings.kafka.topic_prefix)
    deadline = time.monotonic() + 60
    while not await asyncio.to_thread(store.exists, key):
        assert time.monotonic() < deadline, "the publish stage never recorded the decision"
        await asyncio.sleep(0.5)
    decided = serde.decode(await asyncio.to_thread(store.get_bytes, key))
    assert decided["review"]["reviewer"] == "ana-pages"
    assert decided["review"]["decision"] == "REJECT"
    assert decided["review"]["reason"] == "visual_artifacts: seams at the edge"
    # A page listed a moment before the decision still loads the job's images.
    late = await client.get(f"/review/{job['job_id']}/image")
    assert late.status == 200 and await late.read() == image

    again = await client.post(
        f"/review/{job['job_id']}", data={"decision": "approve", "csrf_token": csrf}, allow_redirects=False
    )
    assert again.status == 409
    assert "already decided: reject by ana-pages" in await again.text()


@pytest.fixture(scope="module")
def published_job(pipeline: Any, catalog_server: Any) -> str:
    """A job the real pipeline made (two variants) and published."""
    events = events_for(catalog_server, [5], "pages-job", variants=2)
    (job_id,) = expected_job_ids(events)
    pipeline.submit(events)
    states = pipeline.wait_for([job_id], 120)
    assert states[job_id] == "published", states
    return job_id


async def test_job_files_are_the_jobs_own_only(
    client: TestClient, settings: Settings, held: Any, published_job: str
) -> None:
    other, image, _ = await asyncio.to_thread(held, "other")
    await _log_in(client, make_token(settings, "ana", Role.REVIEWER))
    page = await (await client.get(f"/jobs/{published_job}")).text()
    reference = re.search(r'href="(/jobs/[^"]+/file\?key=refs[^"]+)"', page)
    assert reference, "the lineage links no stored product reference"
    assert (await client.get(reference.group(1).replace("&amp;", "&"))).status == 200
    # Its own generated images need no record: they are under its own prefix.
    own = await client.get(f"/jobs/{other['job_id']}/file", params={"key": other["asset_key"]})
    assert own.status == 200 and await own.read() == image
    for key in (
        other["references"][0]["key"],
        other["asset_key"],
        "review/pending/x.avro",
        f"generated/{published_job}/../../refs/x",
    ):
        response = await client.get(f"/jobs/{published_job}/file", params={"key": key})
        assert response.status == 404, key


async def test_dashboard_data_comes_from_the_named_queries_on_real_events(
    client: TestClient, settings: Settings, pipeline: Any, catalog_server: Any
) -> None:
    events = events_for(catalog_server, [4], "pages-dash")
    job_ids = expected_job_ids(events)
    await asyncio.to_thread(pipeline.submit, events)
    states = await asyncio.to_thread(pipeline.wait_for, job_ids, 120)
    assert set(states.values()) == {"published"}, states

    await _log_in(client, make_token(settings, "al", Role.ANALYST))
    response = await client.get("/dashboard/data", params={"window_s": "3600"})
    assert response.status == 200, await response.text()
    data = await response.json()
    assert data["totals"]["published"] >= len(job_ids)
    assert data["totals"]["quality_verdicts"] >= len(job_ids)
    x = data["x"]
    assert x == sorted(x) and len(x) > 1
    for chart in ("quality", "stage_p95", "throughput"):
        series = data["charts"][chart]["series"]
        assert series, chart
        assert all(len(s["values"]) == len(x) for s in series)
        assert any(v for s in series for v in s["values"]), chart
    throughput = {s["label"]: s["values"] for s in data["charts"]["throughput"]["series"]}
    assert sum(throughput["published"]) >= len(job_ids)
    stages = {s["label"] for s in data["charts"]["stage_p95"]["series"]}
    assert {"intake", "quality", "publish"} <= stages

    sql = await client.get("/dashboard/sql/artifact_rate_over_time")
    assert sql.status == 200
    assert "FROM {database:Identifier}.pipeline_events" in await sql.text()
    assert (await client.get("/dashboard/sql/..%2Fqueries")).status == 404
    assert (await client.get("/dashboard/data", params={"window_s": "7"})).status == 400


async def test_job_page_shows_timeline_variants_and_lineage_of_a_published_job(
    client: TestClient, settings: Settings, published_job: str
) -> None:
    job_id = published_job
    await _log_in(client, make_token(settings, "sam", Role.SRE))
    response = await client.get(f"/jobs/{job_id}")
    assert response.status == 200
    html = await response.text()
    assert 'data-state="published"' in html
    assert "lineage from the published lineage" in html
    # Both variants, the kept one marked, beside the stored product reference.
    assert len(re.findall(r'<figure class="variant( chosen)?"', html)) == 2
    assert html.count('<figure class="variant chosen"') == 1
    assert html.count('<figure class="variant reference"') == 1
    assert "lineage.json" in html  # the published files
    # Each published image's C2PA manifest, verified from the stored bytes.
    assert "Content credentials (C2PA)" in html
    assert "verifies (Trusted)" in html and "does NOT verify" not in html
    assert "policy:auto" in html  # who approved it
    assert f"lightbox replay {job_id} --from-stage generate" in html
    for src in re.findall(r'<img class="thumb" src="([^"]+)"', html):
        image = await client.get(src.replace("&amp;", "&"))
        assert image.status == 200, src
        assert image.content_type == "image/png"

    found = await client.get("/jobs", params={"id": job_id}, allow_redirects=False)
    assert (found.status, found.headers["Location"]) == (303, f"/jobs/{job_id}")
    compare = await client.get(f"/jobs/{job_id}", params={"compare": job_id})
    assert 'id="compare"' in await compare.text()
    # Beside a job with no record (here: none at all), each side says where its job ended.
    beside = await (await client.get(f"/jobs/{job_id}", params={"compare": "no-such-job"})).text()
    assert "ended at" in beside and "publish / published" in beside and "- / -" in beside
    missing = await client.get("/jobs/no-such-job")
    assert missing.status == 200
    assert "No events are recorded" in await missing.text()
