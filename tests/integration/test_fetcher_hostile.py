"""ReferenceFetcher against a real HTTP server on 127.0.0.1 that misbehaves on purpose.

Each hostile input asserts the reason code recorded for it. Needs no Kafka or MinIO: the servers
are started in the test (aiohttp, and a raw asyncio socket server where aiohttp would refuse to
send a lying Content-Length).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import random
import socket
import struct
import time
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import cache

import pytest
from aiohttp import web
from PIL import Image

from processors.references.fetcher import ReferenceFetcher
from processors.references.url_policy import FetchPolicy, Reason, ReferenceFetchError

FAST = FetchPolicy(
    connect_timeout_s=1.0,
    total_timeout_s=2.0,
    read_timeout_s=1.0,
    min_body_bytes_per_s=1024,
    slow_body_grace_s=0.3,
    retries=2,
    backoff_initial_s=0.01,
    backoff_max_s=0.05,
    allow_hosts=("127.0.0.1",),
)


def png_bytes(size: tuple[int, int] = (32, 24)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (12, 200, 90)).save(out, "PNG")
    return out.getvalue()


def jpeg_bytes(size: tuple[int, int] = (64, 48)) -> bytes:
    # Noise, so the entropy-coded data is long enough that cutting it loses real scanlines.
    rng = random.Random(7)
    image = Image.frombytes("RGB", size, bytes(rng.randrange(256) for _ in range(size[0] * size[1] * 3)))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


@cache
def png_declaring(width: int, height: int) -> bytes:
    """A genuine 1-bit PNG bomb: tens of KB on the wire, width*height pixels when decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


PNG = png_bytes()


@cache
def big_png_bytes() -> bytes:
    """1000x1000 RGB: 4 MB once decoded (Pillow keeps RGB at four bytes a pixel)."""
    out = io.BytesIO()
    Image.effect_noise((1000, 1000), 30).convert("RGB").save(out, "PNG", compress_level=1)
    return out.getvalue()


JPEG = jpeg_bytes()
SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"><rect width="64"/></svg>'
HTML = b"<!DOCTYPE html><html><body><h1>Image not found</h1></body></html>"


@dataclass
class Hostile:
    """The running server: its base URLs and what it saw."""

    port: int
    hits: Counter[str] = field(default_factory=Counter)
    in_flight: int = 0
    max_in_flight: int = 0
    body_bytes_sent: int = 0
    first_hit: dict[str, float] = field(default_factory=dict)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


def build_app(state: Hostile) -> web.Application:
    @web.middleware
    async def count(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        state.hits[request.path] += 1
        return await handler(request)

    async def png(_: web.Request) -> web.Response:
        # Mislabelled on purpose: the reported type must come from the bytes.
        return web.Response(body=PNG, content_type="application/octet-stream")

    async def jpeg(_: web.Request) -> web.Response:
        return web.Response(body=JPEG, content_type="image/png")

    async def missing(_: web.Request) -> web.Response:
        return web.Response(status=404, text="no such image")

    async def flaky(request: web.Request) -> web.Response:
        if state.hits[request.path] == 1:
            return web.Response(status=500, text="upstream hiccup")
        return web.Response(body=PNG, content_type="image/png")

    async def always_503(_: web.Request) -> web.Response:
        return web.Response(status=503, text="overloaded")

    async def hang(_: web.Request) -> web.Response:
        await asyncio.sleep(10)
        return web.Response(body=PNG, content_type="image/png")

    async def drip(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "image/png"})
        await response.prepare(request)
        for byte in PNG:
            await response.write(bytes([byte]))
            await asyncio.sleep(0.05)
        return response

    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "image/png"})
        await response.prepare(request)
        block = PNG + bytes(64 * 1024)
        for _ in range(1000):
            await response.write(block)
        return response

    async def html_endless(request: web.Request) -> web.StreamResponse:
        # An error page that never ends: only its first bytes may ever be read.
        response = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        await response.prepare(request)
        await response.write(HTML + b" " * (8 * 1024))
        try:
            for _ in range(2000):
                await response.write(b"<p>" + b"x" * (64 * 1024) + b"</p>")
                state.body_bytes_sent += 64 * 1024
        except (ConnectionResetError, ConnectionError):
            pass
        return response

    async def slow_many(_: web.Request) -> web.Response:
        state.in_flight += 1
        state.max_in_flight = max(state.max_in_flight, state.in_flight)
        try:
            await asyncio.sleep(0.3)
        finally:
            state.in_flight -= 1
        return web.Response(body=PNG, content_type="image/png")

    async def unavailable_for_a_while(request: web.Request) -> web.Response:
        started = state.first_hit.setdefault(request.path, time.monotonic())
        if time.monotonic() - started < 0.8:
            return web.Response(status=503, text="warming up")
        return web.Response(body=PNG, content_type="image/png")

    async def hangs_twice(request: web.Request) -> web.Response:
        if state.hits[request.path] <= 2:
            await asyncio.sleep(10)
        return web.Response(body=PNG, content_type="image/png")

    async def big_png(request: web.Request) -> web.Response:
        return web.Response(body=big_png_bytes(), content_type="image/png")

    async def html_as_jpeg(_: web.Request) -> web.Response:
        return web.Response(body=HTML, content_type="image/jpeg")

    async def truncated(_: web.Request) -> web.Response:
        return web.Response(body=JPEG[: len(JPEG) // 2], content_type="image/jpeg")

    async def empty(_: web.Request) -> web.Response:
        return web.Response(body=b"", content_type="image/png")

    async def bomb(_: web.Request) -> web.Response:
        return web.Response(body=png_declaring(20000, 20000), content_type="image/png")

    async def over_policy(_: web.Request) -> web.Response:
        # 64 megapixels: under Pillow's own global guard, over the policy's 40 million.
        return web.Response(body=png_declaring(8000, 8000), content_type="image/png")

    async def svg(_: web.Request) -> web.Response:
        return web.Response(body=SVG, content_type="image/svg+xml")

    async def svg_as_png(_: web.Request) -> web.Response:
        return web.Response(body=SVG, content_type="image/png")

    def redirect_to(location: Callable[[web.Request], str]) -> Callable[..., Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            return web.Response(status=302, headers={"Location": location(request)})

        return handler

    async def slow_ok(_: web.Request) -> web.Response:
        state.in_flight += 1
        state.max_in_flight = max(state.max_in_flight, state.in_flight)
        try:
            await asyncio.sleep(0.15)
        finally:
            state.in_flight -= 1
        return web.Response(body=PNG, content_type="image/png")

    app = web.Application(middlewares=[count])
    app.router.add_get("/png", png)
    app.router.add_get("/jpeg", jpeg)
    app.router.add_get("/missing", missing)
    app.router.add_get("/flaky", flaky)
    app.router.add_get("/always-503", always_503)
    app.router.add_get("/hang", hang)
    app.router.add_get("/drip", drip)
    app.router.add_get("/endless", endless)
    app.router.add_get("/html-as-jpeg", html_as_jpeg)
    app.router.add_get("/html-endless", html_endless)
    app.router.add_get("/slow-many", slow_many)
    app.router.add_get("/unavailable-for-a-while", unavailable_for_a_while)
    app.router.add_get("/hangs-twice", hangs_twice)
    app.router.add_get("/big-{n}.png", big_png)
    app.router.add_get("/truncated.jpg", truncated)
    app.router.add_get("/empty", empty)
    app.router.add_get("/bomb.png", bomb)
    app.router.add_get("/over-policy.png", over_policy)
    app.router.add_get("/image.svg", svg)
    app.router.add_get("/svg-as-png", svg_as_png)
    app.router.add_get("/slow-ok", slow_ok)
    app.router.add_get("/loop", redirect_to(lambda _: "/loop"))
    app.router.add_get("/r1", redirect_to(lambda _: "/r2"))
    app.router.add_get("/r2", redirect_to(lambda r: f"http://127.0.0.1:{state.port}/png"))
    app.router.add_get("/to-loopback", redirect_to(lambda _: f"http://127.0.0.1:{state.port}/png"))
    app.router.add_get("/to-metadata", redirect_to(lambda _: "http://169.254.169.254/latest/meta-data/"))
    return app


@pytest.fixture
async def server() -> AsyncIterator[Hostile]:
    state = Hostile(port=0)
    # handler_cancellation: a handler whose client hung up stops, so teardown does not wait.
    runner = web.AppRunner(build_app(state), shutdown_timeout=0.2, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.port = runner.addresses[0][1]
    try:
        yield state
    finally:
        await runner.cleanup()


@dataclass
class RawServer:
    port: int
    connections: int = 0


@pytest.fixture
async def lying_length_server() -> AsyncIterator[RawServer]:
    """Declares a 2 GiB body, sends a few bytes, then holds the connection open."""
    state = RawServer(port=0)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.connections += 1
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\n"
            + f"Content-Length: {2 * 1024**3}\r\n\r\n".encode()
            + PNG[:16]
        )
        await writer.drain()
        try:
            await reader.read()  # until the client gives up
        finally:
            writer.close()

    raw = await asyncio.start_server(handle, "127.0.0.1", 0)
    state.port = raw.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        raw.close()


async def fetch_error(url: str, policy: FetchPolicy = FAST) -> ReferenceFetchError:
    async with ReferenceFetcher(policy) as fetcher:
        with pytest.raises(ReferenceFetchError) as info:
            await fetcher.fetch(url)
    return info.value


# --- valid references ---------------------------------------------------------------------


async def test_valid_png_and_jpeg_are_sniffed_not_trusted(server: Hostile) -> None:
    async with ReferenceFetcher(FAST) as fetcher:
        png = await fetcher.fetch(server.url("/png"))
        jpeg = await fetcher.fetch(server.url("/jpeg"))
    assert (png.content_type, png.format, png.width, png.height) == ("image/png", "PNG", 32, 24)
    assert png.data == PNG and png.sha256 == hashlib.sha256(PNG).hexdigest()
    assert png.final_url == server.url("/png")
    assert (jpeg.content_type, jpeg.format, jpeg.width, jpeg.height) == (
        "image/jpeg",
        "JPEG",
        64,
        48,
    )
    assert jpeg.size_bytes == len(JPEG)


async def test_redirects_within_the_cap_are_followed(server: Hostile) -> None:
    async with ReferenceFetcher(FAST) as fetcher:
        image = await fetcher.fetch(server.url("/r1"))
    assert image.final_url == server.url("/png")
    assert server.hits["/r1"] == server.hits["/r2"] == server.hits["/png"] == 1


async def test_per_host_concurrency_is_capped(server: Hostile) -> None:
    policy = replace(FAST, per_host_concurrency=2)
    async with ReferenceFetcher(policy) as fetcher:
        await asyncio.gather(*(fetcher.fetch(server.url("/slow-ok")) for _ in range(6)))
    assert server.hits["/slow-ok"] == 6
    assert server.max_in_flight == 2


# --- HTTP failures and retries ----------------------------------------------------------------


async def test_404_is_not_retried(server: Hostile) -> None:
    error = await fetch_error(server.url("/missing"))
    assert error.reason == "http_404"
    assert not error.retryable
    assert server.hits["/missing"] == 1


async def test_500_then_success_is_retried(server: Hostile) -> None:
    async with ReferenceFetcher(FAST) as fetcher:
        image = await fetcher.fetch(server.url("/flaky"))
    assert image.content_type == "image/png"
    assert server.hits["/flaky"] == 2


async def test_persistent_5xx_gives_up_after_the_retries(server: Hostile) -> None:
    error = await fetch_error(server.url("/always-503"))
    assert error.reason == Reason.HTTP_5XX
    assert error.retryable
    assert server.hits["/always-503"] == 1 + FAST.retries


async def test_timeout_is_retried_then_reported(server: Hostile) -> None:
    policy = replace(FAST, total_timeout_s=0.3, retries=1)
    started = time.monotonic()
    error = await fetch_error(server.url("/hang"), policy)
    assert error.reason == Reason.TIMEOUT
    assert server.hits["/hang"] == 2
    assert time.monotonic() - started < 2.0


async def test_dripping_body_is_cut_off(server: Hostile) -> None:
    started = time.monotonic()
    error = await fetch_error(server.url("/drip"))
    assert error.reason == Reason.SLOW_BODY
    # Adversarial or broken either way: not worth another 20 s.
    assert server.hits["/drip"] == 1
    assert time.monotonic() - started < FAST.total_timeout_s


# --- size caps ------------------------------------------------------------------------------


async def test_declared_2gb_content_length_is_refused_before_reading(
    lying_length_server: RawServer,
) -> None:
    started = time.monotonic()
    error = await fetch_error(f"http://127.0.0.1:{lying_length_server.port}/huge.png")
    assert error.reason == Reason.TOO_LARGE
    assert "Content-Length" in error.detail
    assert lying_length_server.connections == 1
    assert time.monotonic() - started < 1.0


async def test_undeclared_oversized_body_is_cut_at_the_cap(server: Hostile) -> None:
    policy = replace(FAST, max_bytes=256 * 1024)
    error = await fetch_error(server.url("/endless"), policy)
    assert error.reason == Reason.TOO_LARGE
    assert "body exceeds" in error.detail


# --- content ------------------------------------------------------------------------------


async def test_html_served_as_jpeg_is_not_an_image(server: Hostile) -> None:
    assert (await fetch_error(server.url("/html-as-jpeg"))).reason == Reason.NOT_AN_IMAGE


async def test_truncated_jpeg_is_corrupt(server: Hostile) -> None:
    error = await fetch_error(server.url("/truncated.jpg"))
    assert error.reason == Reason.CORRUPT_IMAGE
    assert server.hits["/truncated.jpg"] == 1


async def test_zero_bytes_is_empty(server: Hostile) -> None:
    assert (await fetch_error(server.url("/empty"))).reason == Reason.EMPTY_BODY


async def test_decompression_bomb_png_is_refused(server: Hostile) -> None:
    started = time.monotonic()
    error = await fetch_error(server.url("/bomb.png"))
    assert error.reason == Reason.DECOMPRESSION_BOMB
    assert time.monotonic() - started < 2.0


async def test_pixels_over_the_policy_are_refused_before_decoding(server: Hostile) -> None:
    error = await fetch_error(server.url("/over-policy.png"))
    assert error.reason == Reason.DECOMPRESSION_BOMB
    assert "64000000 pixels" in error.detail


async def test_svg_is_refused_whatever_it_is_labelled(server: Hostile) -> None:
    assert (await fetch_error(server.url("/image.svg"))).reason == Reason.SVG_NOT_ALLOWED
    assert (await fetch_error(server.url("/svg-as-png"))).reason == Reason.SVG_NOT_ALLOWED


# --- redirects and addresses ----------------------------------------------------------------


async def test_redirect_loop_is_capped(server: Hostile) -> None:
    error = await fetch_error(server.url("/loop"))
    assert error.reason == Reason.TOO_MANY_REDIRECTS
    assert server.hits["/loop"] == FAST.max_redirects + 1


LOCALHOST_ONLY = replace(FAST, allow_hosts=("localhost",))


async def test_redirect_to_loopback_is_refused(server: Hostile) -> None:
    # localhost is allowlisted by name; the 127.0.0.1 literal the redirect names is not.
    error = await fetch_error(server.url("/to-loopback", host="localhost"), LOCALHOST_ONLY)
    assert error.reason == Reason.PRIVATE_ADDRESS
    assert server.hits["/to-loopback"] == 1
    assert server.hits["/png"] == 0


async def test_redirect_to_metadata_service_is_refused_before_connecting(server: Hostile) -> None:
    started = time.monotonic()
    error = await fetch_error(server.url("/to-metadata", host="localhost"), LOCALHOST_ONLY)
    assert error.reason == Reason.PRIVATE_ADDRESS
    assert "metadata" in error.detail
    # Connecting would have waited for the connect timeout: nothing was attempted.
    assert time.monotonic() - started < LOCALHOST_ONLY.connect_timeout_s


async def test_dns_rebinding_is_caught_at_connect_time(server: Hostile) -> None:
    """The pre-flight lookup answers with a public address, the connector's own lookup with
    127.0.0.1 (what a rebinding DNS server does): the connection must not be made."""

    async def first_answer_public(host: str, port: int) -> Sequence[str]:
        return ("93.184.215.14",)

    policy = replace(FAST, allow_hosts=())
    async with ReferenceFetcher(policy, resolver=first_answer_public) as fetcher:
        with pytest.raises(ReferenceFetchError) as info:
            await fetcher.fetch(server.url("/png", host="localhost"))
    assert info.value.reason == Reason.PRIVATE_ADDRESS
    assert not info.value.retryable
    assert server.hits["/png"] == 0


# --- URL policy, through the fetcher ----------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["file:///etc/passwd", "ftp://127.0.0.1/a.png", "data:image/png;base64,iVBORw0KGgo="],
)
async def test_non_http_schemes_are_refused(url: str) -> None:
    assert (await fetch_error(url)).reason == Reason.SCHEME_NOT_ALLOWED


async def test_credentials_in_url_are_refused(server: Hostile) -> None:
    url = f"http://user:password@127.0.0.1:{server.port}/png"
    assert (await fetch_error(url)).reason == Reason.CREDENTIALS_IN_URL
    assert server.hits["/png"] == 0


async def test_very_long_url_is_refused(server: Hostile) -> None:
    url = server.url("/png?pad=" + "x" * FAST.max_url_length)
    assert (await fetch_error(url)).reason == Reason.URL_TOO_LONG
    assert server.hits["/png"] == 0


# --- junk is refused at its first bytes -------------------------------------------------------


async def test_a_non_image_is_refused_before_its_body_is_read(server: Hostile) -> None:
    started = time.monotonic()
    error = await fetch_error(server.url("/html-endless"))
    assert error.reason == Reason.NOT_AN_IMAGE
    assert server.hits["/html-endless"] == 1
    await asyncio.sleep(0.2)  # let the server notice the closed connection
    # Cut at the first chunk: well under the 20 MB size cap it would otherwise have read.
    assert server.body_bytes_sent < 4 * 1024 * 1024
    assert time.monotonic() - started < 1.5


# --- slow origins, busy origins, retries over a window -----------------------------------------


async def test_many_references_on_one_slow_origin_queue_instead_of_timing_out(server: Hostile) -> None:
    """20 references, 2 connections to the host, 0.3 s a response, a 1 s deadline and no retry:
    the last waits about 3 s for its slot, and waiting for a slot is not the origin being slow."""
    policy = replace(FAST, per_host_concurrency=2, total_timeout_s=1.0, retries=0, retry_window_s=0.0)
    started = time.monotonic()
    async with ReferenceFetcher(policy) as fetcher:
        results = await asyncio.gather(
            *(fetcher.fetch(server.url(f"/slow-many?n={n}")) for n in range(20)), return_exceptions=True
        )
    failures = [r for r in results if isinstance(r, BaseException)]
    assert failures == []
    assert server.hits["/slow-many"] == 20
    assert server.max_in_flight == 2
    assert time.monotonic() - started >= 20 / 2 * 0.3 * 0.9


async def test_downloads_in_flight_are_capped_across_the_fetcher(server: Hostile) -> None:
    policy = replace(FAST, per_host_concurrency=10, max_concurrent_downloads=3)
    async with ReferenceFetcher(policy) as fetcher:
        await asyncio.gather(*(fetcher.fetch(server.url("/slow-many")) for _ in range(9)))
    assert server.max_in_flight == 3


async def test_a_5xx_is_retried_until_the_origin_recovers_within_the_window(server: Hostile) -> None:
    policy = replace(FAST, retries=None, retry_window_s=5.0, backoff_initial_s=0.05, backoff_max_s=0.2)
    async with ReferenceFetcher(policy) as fetcher:
        image = await fetcher.fetch(server.url("/unavailable-for-a-while"))
    assert image.content_type == "image/png"
    assert server.hits["/unavailable-for-a-while"] > 3  # the old three tries would have given up


async def test_a_5xx_outlasting_the_window_fails_with_its_reason(server: Hostile) -> None:
    policy = replace(FAST, retries=None, retry_window_s=0.5, backoff_initial_s=0.05, backoff_max_s=0.1)
    started = time.monotonic()
    error = await fetch_error(server.url("/always-503"), policy)
    elapsed = time.monotonic() - started
    assert error.reason == Reason.HTTP_5XX
    assert "gave up after" in error.detail
    assert server.hits["/always-503"] > 3
    assert 0.4 <= elapsed < 2.0


async def test_timeouts_are_retried_within_the_window(server: Hostile) -> None:
    policy = replace(
        FAST, total_timeout_s=0.3, retries=None, retry_window_s=5.0, backoff_initial_s=0.05, backoff_max_s=0.1
    )
    async with ReferenceFetcher(policy) as fetcher:
        image = await fetcher.fetch(server.url("/hangs-twice"))
    assert image.width == 32
    assert server.hits["/hangs-twice"] == 3


async def test_a_refused_connection_is_retried_until_the_origin_comes_up() -> None:
    """Nothing listens on the port for the first 0.7 s (connection refused), then an origin does."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    state = Hostile(port=port)
    runner = web.AppRunner(build_app(state), shutdown_timeout=0.2, handler_cancellation=True)
    await runner.setup()

    async def come_up_later() -> None:
        await asyncio.sleep(0.7)
        await web.TCPSite(runner, "127.0.0.1", port).start()

    policy = replace(FAST, retries=None, retry_window_s=5.0, backoff_initial_s=0.05, backoff_max_s=0.2)
    later = asyncio.create_task(come_up_later())
    try:
        async with ReferenceFetcher(policy) as fetcher:
            image = await fetcher.fetch(state.url("/png"))
        assert image.data == PNG
    finally:
        await later
        await runner.cleanup()


async def test_a_refused_connection_past_the_window_fails_as_a_connection_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    policy = replace(FAST, retries=None, retry_window_s=0.3, backoff_initial_s=0.05, backoff_max_s=0.1)
    error = await fetch_error(f"http://127.0.0.1:{port}/png", policy)
    assert error.reason == Reason.CONNECTION_ERROR
    assert "gave up after" in error.detail


# --- decodes: in the caller's executor, under the decode budget --------------------------------


async def test_decodes_run_in_the_callers_executor_within_the_decode_budget(server: Hostile) -> None:
    """Six 4 MB decodes with a 6 MB budget: never two proofs at once, and each in the runner the
    caller gave (the references stage gives its own run_blocking)."""
    running: Counter[str] = Counter()
    peak: Counter[str] = Counter()

    async def runner(func: Callable[..., object], /, *args: object) -> object:
        name = getattr(func, "__name__", "")
        running[name] += 1
        peak[name] = max(peak[name], running[name])
        try:
            return await asyncio.to_thread(func, *args)
        finally:
            running[name] -= 1

    policy = replace(FAST, decode_budget_bytes=6 * 1000 * 1000)
    async with ReferenceFetcher(policy, run_blocking=runner) as fetcher:
        images = await asyncio.gather(*(fetcher.fetch(server.url(f"/big-{n}.png")) for n in range(6)))
    assert [(i.width, i.height) for i in images] == [(1000, 1000)] * 6
    assert peak["prove_image"] == 1
    assert sum(1 for _ in images) == 6 and fetcher.decode_budget.in_use == 0
