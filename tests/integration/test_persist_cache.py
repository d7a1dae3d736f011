"""ReferencePersister against real MinIO and a real HTTP server on 127.0.0.1.

MinIO is the session's real stack (tests/conftest.py). Each test writes under its own prefix.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace

import pytest
from aiohttp import web
from PIL import Image

from processors import storage_keys
from processors.references.fetcher import ReferenceFetcher
from processors.references.persist import ReferencePersister, url_sha256
from processors.references.url_policy import FetchPolicy, Reason
from processors.storage import ObjectStore

pytestmark = pytest.mark.integration

POLICY = FetchPolicy(
    total_timeout_s=2.0,
    connect_timeout_s=1.0,
    read_timeout_s=1.0,
    retries=1,
    backoff_initial_s=0.01,
    allow_hosts=("127.0.0.1",),
)


def png(colour: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "PNG")
    return out.getvalue()


SAME = png((250, 120, 0))


@dataclass
class Origin:
    port: int = 0
    hits: Counter[str] = field(default_factory=Counter)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def total(self) -> int:
        return sum(self.hits.values())


@pytest.fixture
async def origin() -> AsyncIterator[Origin]:
    state = Origin()

    async def same(request: web.Request) -> web.Response:
        state.hits[request.path] += 1
        return web.Response(body=SAME, content_type="image/png")

    async def distinct(request: web.Request) -> web.Response:
        state.hits[request.path] += 1
        seed = hashlib.sha256(request.match_info["name"].encode()).digest()
        return web.Response(body=png((seed[0], seed[1], seed[2])), content_type="image/png")

    async def missing(request: web.Request) -> web.Response:
        state.hits[request.path] += 1
        return web.Response(status=404)

    app = web.Application()
    app.router.add_get("/same/{n}", same)
    app.router.add_get("/img/{name}", distinct)
    app.router.add_get("/missing", missing)
    runner = web.AppRunner(app, shutdown_timeout=0.2)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    state.port = runner.addresses[0][1]
    try:
        yield state
    finally:
        await runner.cleanup()


@pytest.fixture
def prefix() -> str:
    return f"test-persist-{uuid.uuid4().hex[:12]}/refs"


async def test_same_image_under_ten_urls_is_stored_once(
    origin: Origin, store: ObjectStore, prefix: str
) -> None:
    urls = [origin.url(f"/same/{n}") for n in range(10)]
    async with ReferenceFetcher(POLICY) as fetcher:
        persister = ReferencePersister(store, fetcher, prefix=prefix)
        persisted, dropped = await persister.persist_all([(u, "product", True) for u in urls])
    assert dropped == []
    assert len(persisted) == 10
    assert {p.key for p in persisted} == {persisted[0].key}
    assert sum(p.stored_new for p in persisted) == 1
    assert persisted[0].sha256 == hashlib.sha256(SAME).hexdigest()
    assert persisted[0].key.endswith(".png")
    stored = list(store.list_keys(f"{prefix}/sha256/"))
    assert stored == [persisted[0].key]
    assert store.get_bytes(stored[0]) == SAME
    assert len(list(store.list_keys(storage_keys.url_cache_prefix(prefix)))) == 10
    meta = store.metadata(stored[0])
    assert meta["content-type"] == "image/png"
    assert meta["x-amz-meta-source-url"] in urls


async def test_second_persist_of_a_url_makes_no_request(
    origin: Origin, store: ObjectStore, prefix: str
) -> None:
    url = origin.url("/img/front")
    async with ReferenceFetcher(POLICY) as fetcher:
        persister = ReferencePersister(store, fetcher, prefix=prefix)
        first = await persister.persist(url, "product")
        again = await persister.persist(url, "product")
    assert origin.total == 1
    assert (first.from_cache, first.stored_new) == (False, True)
    assert (again.from_cache, again.stored_new) == (True, False)
    assert again.key == first.key and again.sha256 == first.sha256
    assert (again.width, again.height, again.content_type) == (40, 30, "image/png")
    assert again.size_bytes == first.size_bytes

    # A restarted worker (new fetcher, new persister) is answered from storage too.
    async with ReferenceFetcher(POLICY) as fetcher:
        restarted = await ReferencePersister(store, fetcher, prefix=prefix).persist(url, "mood")
    assert origin.total == 1
    assert restarted.from_cache and restarted.role == "mood"


async def test_same_url_twice_in_one_batch_fetches_once(
    origin: Origin, store: ObjectStore, prefix: str
) -> None:
    url = origin.url("/img/twice")
    async with ReferenceFetcher(POLICY) as fetcher:
        persister = ReferencePersister(store, fetcher, prefix=prefix)
        persisted, _ = await persister.persist_all([(url, "product", True), (url, "mood", False)])
    assert origin.total == 1
    assert [p.role for p in persisted] == ["product", "mood"]
    assert sorted(p.from_cache for p in persisted) == [False, True]


async def test_expired_cache_entry_is_refetched(origin: Origin, store: ObjectStore, prefix: str) -> None:
    url = origin.url("/img/ttl")
    async with ReferenceFetcher(replace(POLICY, cache_ttl_s=0.3)) as fetcher:
        persister = ReferencePersister(store, fetcher, prefix=prefix)
        first = await persister.persist(url, "product")
        await asyncio.sleep(0.4)
        again = await persister.persist(url, "product")
    assert origin.total == 2
    assert not again.from_cache
    # Same bytes: nothing new uploaded.
    assert again.key == first.key and not again.stored_new


async def test_cache_entry_for_a_deleted_object_is_refetched(
    origin: Origin, store: ObjectStore, prefix: str
) -> None:
    url = origin.url("/img/deleted")
    async with ReferenceFetcher(POLICY) as fetcher:
        persister = ReferencePersister(store, fetcher, prefix=prefix)
        first = await persister.persist(url, "product")
        store.client.remove_object(store.bucket, first.key)
        again = await persister.persist(url, "product")
    assert origin.total == 2
    assert (again.from_cache, again.stored_new) == (False, True)
    assert store.exists(again.key)


async def test_failures_become_dropped_references(origin: Origin, store: ObjectStore, prefix: str) -> None:
    refs = [
        (origin.url("/img/product"), "product", True),
        (origin.url("/missing"), "mood_board", False),
        ("file:///etc/passwd", "influencer", True),
    ]
    async with ReferenceFetcher(POLICY) as fetcher:
        persisted, dropped = await ReferencePersister(store, fetcher, prefix=prefix).persist_all(refs)
    assert [p.role for p in persisted] == ["product"]
    assert [(d.role, d.required, d.reason) for d in dropped] == [
        ("mood_board", False, "http_404"),
        ("influencer", True, Reason.SCHEME_NOT_ALLOWED),
    ]
    record = dropped[1].to_record()
    assert record["url_sha256"] == url_sha256("file:///etc/passwd")
    assert "url" not in record
    # Nothing about a failed fetch is cached: the next attempt tries again.
    assert len(list(store.list_keys(storage_keys.url_cache_prefix(prefix)))) == 1


async def test_downloaded_bytes_are_kept_only_for_the_roles_asked_for(
    origin: Origin, store: ObjectStore, prefix: str
) -> None:
    refs = [
        (origin.url("/img/keep-product"), "PRODUCT", True),
        (origin.url("/img/keep-mood"), "MOODBOARD", False),
    ]
    async with ReferenceFetcher(POLICY) as fetcher:
        persister = ReferencePersister(store, fetcher, prefix=prefix)
        persisted, dropped = await persister.persist_all(refs, keep_bytes_for={"PRODUCT"})
    assert dropped == []
    by_role = {p.role: p for p in persisted}
    assert by_role["PRODUCT"].data == store.get_bytes(by_role["PRODUCT"].key)
    assert by_role["MOODBOARD"].data is None  # released once stored
    assert (by_role["PRODUCT"].required, by_role["MOODBOARD"].required) == (True, False)
