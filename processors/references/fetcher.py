"""The hardened reference downloader: one URL in, decoded-and-proven image bytes out.

Every refusal is a ReferenceFetchError with a stable reason code. What is enforced, and where:
- url_policy.check_url on the first URL and on every redirect hop (redirects are followed here,
  never by aiohttp, so a public URL cannot bounce us to 127.0.0.1 or the metadata service);
- the connector's resolver refuses private answers again at connect time (DNS rebinding);
- size cap on the declared Content-Length and again while streaming;
- the first bytes are sniffed before the rest of the body is read: an HTML error page or any
  other non-image is dropped at its first chunk, not after 20 MB;
- a total deadline per attempt that runs only while the request holds its connection slots
  (slots.py: queueing for a busy host is not the host being slow), an idle-read timeout and a
  minimum body throughput;
- retryable failures (timeouts, 5xx, refused or reset connections) are retried with backoff for
  ``retry_window_s`` after the first one;
- the bytes are proven by decoding (decoding.py), under a budget of decoded bytes shared by every
  concurrent fetch, and in the caller's own executor when it passes one (the references stage
  passes its ``run_blocking``).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from yarl import URL

from processors.backoff import jittered_delay
from processors.references.decoding import (
    DecodeBudget,
    ImageInfo,
    inspect_image,
    probe_image,
    prove_image,
    refuse_non_raster,
    require_strict_truncation,
)
from processors.references.slots import AttemptClock, DownloadSlots, Origin
from processors.references.url_policy import (
    AddressResolver,
    FetchPolicy,
    Reason,
    ReferenceFetchError,
    address_refusal,
    check_url,
    host_is_allowlisted,
)
from processors.storage import sha256_hex

__all__ = ["FetchedImage", "ImageInfo", "ReferenceFetcher", "inspect_image"]

log = logging.getLogger(__name__)

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_CHUNK_BYTES = 64 * 1024
# Enough for every raster signature and for telling HTML and SVG apart (sniff reads 4 KiB of text).
_SNIFF_BYTES = 4096

# Runs a synchronous function off the event loop: asyncio.to_thread, or a stage's run_blocking.
BlockingRunner = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class FetchedImage:
    data: bytes
    content_type: str  # sniffed from the bytes, never the server's header
    width: int
    height: int
    format: str  # Pillow's format name: JPEG, PNG, ...
    final_url: str  # after redirects
    sha256: str

    @property
    def size_bytes(self) -> int:
        return len(self.data)


class BlockedAddressError(OSError):
    """Raised inside the connector's resolver; an OSError so aiohttp wraps it, not loses it."""


class _PolicyResolver(AbstractResolver):
    """Re-checks, at connect time, the addresses the connector is about to use."""

    def __init__(self, policy: FetchPolicy) -> None:
        self._policy = policy
        self._inner = ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if host_is_allowlisted(host, self._policy, port):
            return results
        for result in results:
            refusal = address_refusal(result["host"], self._policy, port)
            if refusal:
                raise BlockedAddressError(f"{host}: {refusal}")
        return results

    async def close(self) -> None:
        await self._inner.close()


@dataclass
class _Progress:
    """Where an attempt is, so a deadline can be reported as timeout or slow_body."""

    in_body: bool = False
    body_bytes: int = 0


class ReferenceFetcher:
    """Async context manager owning one aiohttp session; fetch() is safe to call concurrently."""

    def __init__(
        self,
        policy: FetchPolicy | None = None,
        *,
        resolver: AddressResolver | None = None,
        run_blocking: BlockingRunner | None = None,
        decode_budget: DecodeBudget | None = None,
    ) -> None:
        self.policy = policy or FetchPolicy()
        self._resolver = resolver
        self._session: aiohttp.ClientSession | None = None
        self._run_blocking: BlockingRunner = run_blocking or asyncio.to_thread
        self.decode_budget = decode_budget or DecodeBudget(self.policy.decode_budget_bytes)
        self.slots = DownloadSlots(self.policy.per_host_concurrency, self.policy.max_concurrent_downloads)

    @property
    def resolver(self) -> AddressResolver | None:
        """The resolver URL checks use (None: the system's), for callers that check URLs too."""
        return self._resolver

    async def __aenter__(self) -> Self:
        require_strict_truncation()
        policy = self.policy
        connector = aiohttp.TCPConnector(
            # DownloadSlots bounds connections, off the clock; the connector must never make a
            # request queue (its wait would be on the clock: aiohttp counts it as connecting).
            limit=0,
            limit_per_host=0,
            resolver=_PolicyResolver(policy),
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            # total is enforced per attempt by fetch() itself (AttemptClock), to tell timeout
            # from slow_body and to leave slot waits off the clock.
            timeout=aiohttp.ClientTimeout(
                total=None,
                connect=None,
                sock_connect=policy.connect_timeout_s,
                sock_read=policy.read_timeout_s,
            ),
            # Cookies set by one reference host must not ride along to the next.
            cookie_jar=aiohttp.DummyCookieJar(),
            # HTTP(S)_PROXY from the environment would route around the address checks.
            trust_env=False,
            # A gzip body is a second decompression bomb; take bytes as sent, identity only.
            auto_decompress=False,
            headers={
                "User-Agent": policy.user_agent,
                "Accept": "image/*",
                "Accept-Encoding": "identity",
            },
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def fetch(self, url: str) -> FetchedImage:
        """Download, prove and describe one reference; retries transient failures."""
        # The download returns holding a total slot: the body counts as a download in flight
        # until it is proven, so bodies waiting for the decode budget cannot pile up unbounded.
        data, final_url = await self._download(url)
        try:
            info = await self._run_blocking(probe_image, data, self.policy)
            async with self.decode_budget.hold(info.decoded_bytes):
                await self._run_blocking(prove_image, data, info)
        finally:
            self.slots.release_total()
        return FetchedImage(
            data=data,
            content_type=info.content_type,
            width=info.width,
            height=info.height,
            format=info.format,
            final_url=final_url,
            sha256=sha256_hex(data),  # the digest its content-addressed key is made from
        )

    async def _download(self, url: str) -> tuple[bytes, str]:
        """The body, after as many attempts as the retry window (and ``retries``) allow."""
        policy = self.policy
        attempt = 0
        first_failure: float | None = None
        while True:
            try:
                return await self._attempt(url)
            except ReferenceFetchError as exc:
                if not exc.retryable:
                    raise
                now = time.monotonic()
                first_failure = now if first_failure is None else first_failure
                delay = self._backoff(attempt)
                out_of_retries = policy.retries is not None and attempt >= policy.retries
                if out_of_retries or now + delay - first_failure > policy.retry_window_s:
                    raise ReferenceFetchError(
                        exc.reason,
                        f"{exc.detail} (gave up after {attempt + 1} attempt(s), "
                        f"{now - first_failure:.1f}s after the first failure)",
                        retryable=True,
                    ) from exc
                log.info(
                    "reference fetch attempt %d failed (%s), retrying in %.2fs",
                    attempt + 1,
                    exc.reason,
                    delay,
                )
                attempt += 1
                await asyncio.sleep(delay)

    def _backoff(self, attempt: int) -> float:
        """Before retry number ``attempt + 1``. Jittered (many jobs citing one flaky CDN should
        not retry in lockstep) but at least half the step: a host that just failed gets a pause."""
        return jittered_delay(
            attempt + 1, self.policy.backoff_initial_s, self.policy.backoff_max_s, floor=0.5
        )

    async def _attempt(self, url: str) -> tuple[bytes, str]:
        progress = _Progress()
        clock = AttemptClock(self.policy.total_timeout_s)
        try:
            return await self._follow(url, progress, clock)
        except TimeoutError as exc:
            if clock.expired and progress.in_body:
                raise ReferenceFetchError(
                    Reason.SLOW_BODY,
                    f"{progress.body_bytes} bytes within {self.policy.total_timeout_s}s",
                ) from exc
            which = "total deadline" if clock.expired else "connect or read timeout"
            raise ReferenceFetchError(Reason.TIMEOUT, which, retryable=True) from exc
        except aiohttp.ClientError as exc:
            raise _client_error(exc) from exc

    async def _follow(self, url: str, progress: _Progress, clock: AttemptClock) -> tuple[bytes, str]:
        session = self._session
        if session is None:
            raise RuntimeError("ReferenceFetcher used outside 'async with'")
        current: str | URL = url
        for _hop in range(self.policy.max_redirects + 1):
            async with clock.running():
                target = await check_url(current, self.policy, self._resolver)
            origin = Origin(target.url.scheme, target.host, target.port)
            async with self.slots.host(origin):
                await self.slots.acquire_total()
                try:
                    async with (
                        clock.running(),
                        session.get(target.url, allow_redirects=False) as response,
                    ):
                        if response.status in _REDIRECT_STATUSES:
                            current = _redirect_target(response)
                        else:
                            _check_status(response)
                            # Success keeps the total slot: fetch() gives it back once proven.
                            return await self._read_body(response, progress), str(response.url)
                except BaseException:
                    self.slots.release_total()
                    raise
                self.slots.release_total()  # a redirect: no body in hand
        raise ReferenceFetchError(
            Reason.TOO_MANY_REDIRECTS, f"more than {self.policy.max_redirects} redirects"
        )

    async def _read_body(self, response: aiohttp.ClientResponse, progress: _Progress) -> bytes:
        limit = self.policy.max_bytes
        declared = response.content_length
        if declared is not None and declared > limit:
            # Refused on the header: not one byte of the body is read.
            response.close()
            raise ReferenceFetchError(Reason.TOO_LARGE, f"declared Content-Length {declared} > {limit}")
        progress.in_body = True
        body = bytearray()
        sniffed = False
        started = time.monotonic()
        while True:
            chunk = await response.content.read(min(_CHUNK_BYTES, limit + 1 - len(body)))
            if not chunk:
                break
            body += chunk
            progress.body_bytes = len(body)
            if len(body) > limit:
                response.close()
                raise ReferenceFetchError(Reason.TOO_LARGE, f"body exceeds {limit} bytes")
            if not sniffed and len(body) >= _SNIFF_BYTES:
                sniffed = True
                self._refuse_junk(bytes(body[:_SNIFF_BYTES]), response)
            self._check_throughput(len(body), time.monotonic() - started, response)
        return bytes(body)

    @staticmethod
    def _refuse_junk(head: bytes, response: aiohttp.ClientResponse) -> None:
        try:
            refuse_non_raster(head)
        except ReferenceFetchError:
            response.close()  # the rest of the body is never read
            raise

    def _check_throughput(self, received: int, elapsed: float, response: aiohttp.ClientResponse) -> None:
        policy = self.policy
        if elapsed <= policy.slow_body_grace_s:
            return
        rate = received / elapsed
        if rate < policy.min_body_bytes_per_s:
            response.close()
            raise ReferenceFetchError(
                Reason.SLOW_BODY,
                f"{rate:.0f} B/s after {elapsed:.1f}s < {policy.min_body_bytes_per_s:.0f} B/s",
            )


def _redirect_target(response: aiohttp.ClientResponse) -> URL:
    location = response.headers.get("Location")
    if not location:
        raise ReferenceFetchError(Reason.BAD_REDIRECT, f"{response.status} without Location")
    try:
        return response.url.join(URL(location))
    except (ValueError, TypeError) as exc:
        raise ReferenceFetchError(Reason.BAD_REDIRECT, f"unusable Location: {exc}") from exc


def _check_status(response: aiohttp.ClientResponse) -> None:
    status = response.status
    if status == 200:
        return
    if status in (204, 205):
        raise ReferenceFetchError(Reason.EMPTY_BODY, f"HTTP {status}")
    # 5xx are the server's transient trouble; a 4xx will answer the same next time.
    raise ReferenceFetchError(
        Reason.http_status(status),
        f"HTTP {status} {response.reason or ''}".rstrip(),
        retryable=status >= 500,
    )


def _client_error(exc: aiohttp.ClientError) -> ReferenceFetchError:
    """aiohttp's exception zoo mapped onto reason codes; order matters (subclasses first)."""
    if isinstance(exc, aiohttp.ClientConnectorError) and isinstance(exc.os_error, BlockedAddressError):
        return ReferenceFetchError(Reason.PRIVATE_ADDRESS, str(exc.os_error))
    if isinstance(exc, aiohttp.InvalidURL):
        return ReferenceFetchError(Reason.INVALID_URL, str(exc))
    if isinstance(exc, aiohttp.ClientSSLError):
        return ReferenceFetchError(Reason.TLS_ERROR, str(exc))
    if isinstance(exc, aiohttp.ClientPayloadError):
        return ReferenceFetchError(Reason.CONNECTION_ERROR, f"incomplete body: {exc}", retryable=True)
    if isinstance(exc, aiohttp.ClientResponseError):
        # Unparseable status line or headers: the server will not improve on retry.
        return ReferenceFetchError(Reason.BAD_RESPONSE, f"{exc.status} {exc.message}")
    return ReferenceFetchError(Reason.CONNECTION_ERROR, f"{type(exc).__name__}: {exc}", retryable=True)
