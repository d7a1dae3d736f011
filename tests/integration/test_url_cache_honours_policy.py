"""A URL-cache entry is only served while the current fetch policy admits the URL: real MinIO
(the session's stack) and a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import io
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
from aiohttp import web
from PIL import Image

from processors.references.fetcher import ReferenceFetcher
from processors.references.persist import ReferencePersister
from processors.references.url_policy import FetchPolicy, Reason, ReferenceFetchError
from processors.storage import ObjectStore

pytestmark = pytest.mark.integration

ALLOWING = FetchPolicy(
    total_timeout_s=2.0,
    connect_timeout_s=1.0,
    read_timeout_s=1.0,
    retries=0,
    allow_hosts=("127.0.0.1",),
)
FORBIDDING = replace(ALLOWING, allow_hosts=())


@pytest.fixture
async def origin() -> AsyncIterator[dict[str, Any]]:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (30, 140, 90)).save(buf, "PNG")
    state: dict[str, Any] = {"hits": 0, "body": buf.getvalue()}

    async def image(request: web.Request) -> web.Response:
        state["hits"] += 1
        return web.Response(body=state["body"], content_type="image/png")

    app = web.Application()
    app.router.add_get("/img.png", image)
    runner = web.AppRunner(app, shutdown_timeout=0.2)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    state["url"] = f"http://127.0.0.1:{runner.addresses[0][1]}/img.png"
    try:
        yield state
    finally:
        await runner.cleanup()


async def test_cached_url_is_refused_once_the_policy_forbids_it(
    origin: dict[str, Any], store: ObjectStore
) -> None:
    prefix = f"test-persist-policy-{uuid.uuid4().hex[:12]}/refs"
    url = origin["url"]
    async with ReferenceFetcher(ALLOWING) as fetcher:
        persister = ReferencePersister(store, fetcher, prefix=prefix)
        first = await persister.persist(url, "PRODUCT")
        again = await persister.persist(url, "PRODUCT")
    assert not first.from_cache
    assert again.from_cache  # allowed: still answered from the cache, no request
    assert origin["hits"] == 1

    # Same bucket and prefix (a later deploy, or another pipeline), a policy without the allowlist.
    async with ReferenceFetcher(FORBIDDING) as fetcher:
        persister = ReferencePersister(store, fetcher, prefix=prefix)
        with pytest.raises(ReferenceFetchError) as caught:
            await persister.persist(url, "PRODUCT")
        assert caught.value.reason == Reason.PRIVATE_ADDRESS
        persisted, dropped = await persister.persist_all([(url, "PRODUCT", True)])
    assert persisted == []
    (drop,) = dropped
    assert drop.reason == Reason.PRIVATE_ADDRESS
    assert origin["hits"] == 1
