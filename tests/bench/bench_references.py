"""References stage throughput: images/s and MB/s at concurrency 1, 8 and 64, then the same catalog
again (every reference a cache hit: no network). Real MinIO, a real HTTP server on loopback.

    python -m tests.bench.bench_references [--images 96] [--size 768] [--origin-latency-ms 50]

Needs the stack (`lightbox stack up`). Prints one line per run and the cache speedup.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import time
import uuid

from aiohttp import web
from PIL import Image

from processors.config import load_settings
from processors.references.fetcher import ReferenceFetcher
from processors.references.persist import ReferencePersister
from processors.references.url_policy import FetchPolicy
from processors.storage import ObjectStore


def make_images(count: int, size: int) -> list[bytes]:
    images = []
    for i in range(count):
        image = Image.effect_noise((size, size), 40 + i % 50).convert("RGB")
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=90)
        images.append(buf.getvalue())
    return images


async def serve(images: list[bytes], latency_s: float) -> tuple[web.AppRunner, str]:
    async def handler(request: web.Request) -> web.Response:
        # A real image host is a network away; loopback alone would hide what the cache saves.
        await asyncio.sleep(latency_s)
        return web.Response(body=images[int(request.match_info["n"])], content_type="image/jpeg")

    app = web.Application()
    app.router.add_get("/img/{n}.jpg", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


async def run(
    store: ObjectStore, prefix: str, urls: list[str], concurrency: int, total_bytes: int, label: str
) -> float:
    policy = FetchPolicy(
        allow_hosts=("127.0.0.1",), per_host_concurrency=concurrency, max_concurrent_downloads=concurrency
    )
    gate = asyncio.Semaphore(concurrency)
    async with ReferenceFetcher(policy) as fetcher:
        persister = ReferencePersister(store, fetcher, prefix=prefix)

        async def one(url: str) -> None:
            async with gate:
                await persister.persist(url, "PRODUCT")

        started = time.perf_counter()
        await asyncio.gather(*(one(u) for u in urls))
        elapsed = time.perf_counter() - started
    print(
        f"{label:<28} concurrency {concurrency:>3}: {len(urls) / elapsed:7.1f} images/s "
        f"{total_bytes / elapsed / 1e6:7.2f} MB/s ({elapsed:.2f} s)"
    )
    return elapsed


async def main_async(images_count: int, size: int, latency_ms: float) -> None:
    store = ObjectStore(load_settings().storage)
    store.ensure_bucket()
    images = make_images(images_count, size)
    total = sum(len(i) for i in images)
    runner, base = await serve(images, latency_ms / 1000)
    print(
        f"{images_count} JPEGs of {size}x{size}, {total / 1e6:.1f} MB in all, served on {base} "
        f"with {latency_ms:.0f} ms origin latency"
    )
    try:
        for concurrency in (1, 8, 64):
            # A fresh query string per run: new URLs, so the URL cache cannot answer.
            urls = [
                f"{base}/img/{n}.jpg?run={concurrency}-{uuid.uuid4().hex[:6]}" for n in range(images_count)
            ]
            prefix = f"bench-refs/{uuid.uuid4().hex[:8]}"
            cold = await run(store, prefix, urls, concurrency, total, "new URLs (download+store)")
            warm = await run(store, prefix, urls, concurrency, total, "same URLs again (cache)")
            print(f"{'':<28} cache speedup at concurrency {concurrency}: {cold / warm:.1f}x")
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--size", type=int, default=768)
    parser.add_argument(
        "--origin-latency-ms", type=float, default=50.0, help="added per response (default 50)"
    )
    args = parser.parse_args()
    asyncio.run(main_async(args.images, args.size, args.origin_latency_ms))


if __name__ == "__main__":
    main()
