"""The hardened reference downloader: one URL in, decoded-and-proven image bytes out.

Every refusal is a ReferenceFetchError with a stable reason code. What is enforced, and where:
- url_policy.check_url on the first URL and on every redirect hop (redirects are followed here,
  never by aiohttp, so a public URL cannot bounce us to 127.0.0.1 or the metadata service);
- the connector's resolver refuses private answers again at connect time (DNS rebinding);
- size cap on the declared Content-Length and again while streaming;
- a total deadline per attempt, an idle-read timeout and a minimum body throughput;
- the bytes are sniffed, not trusted by header, and fully decoded by Pillow with a pixel cap
  checked from the header before any pixel is allocated.
"""

from __future__ import annotations

import asyncio
import io
import logging
import socket
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from PIL import Image, ImageFile
from yarl import URL

from processors.backoff import jittered_delay
from processors.imaging.formats import BY_MIME
from processors.imaging.limits import DimensionError, check_dimensions
from processors.references import sniff as sniffing
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

log = logging.getLogger(__name__)

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_CHUNK_BYTES = 64 * 1024


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


@dataclass(frozen=True)
class ImageInfo:
    content_type: str
    format: str
    width: int
    height: int


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
        if host_is_allowlisted(host, self._policy):
            return results
        for result in results:
            refusal = address_refusal(result["host"], self._policy)
            if refusal:
                raise BlockedAddressError(f"{host}: {refusal}")
        return results

    async def close(self) -> None:
        await self._inner.close()


def _require_strict_truncation() -> None:
    # Pillow's switch is process-global and cannot be overridden per call; if anything in the
    # process turned it on, truncated downloads would decode "successfully". Fail loudly.
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True; reference validation requires False")


def inspect_image(data: bytes, policy: FetchPolicy) -> ImageInfo:
    """Prove the bytes are a raster image by decoding them fully. CPU-bound: run in a thread."""
    if not data:
        raise ReferenceFetchError(Reason.EMPTY_BODY, "zero bytes")
    mime = sniffing.sniff(data)
    if mime == sniffing.SVG:
        raise ReferenceFetchError(Reason.SVG_NOT_ALLOWED, "SVG is refused, not rasterised")
    if not sniffing.is_raster(mime):
        raise ReferenceFetchError(
            Reason.NOT_AN_IMAGE, f"content sniffed as {mime or 'unknown'}; starts {data[:8]!r}"
        )
    assert mime is not None
    # Only the sniffed type's decoder ever sees downloaded bytes: Pillow would otherwise try
    # every plugin it has (EPS hands data to Ghostscript, for one), whatever the bytes are.
    decoder = BY_MIME[mime].pillow
    if decoder is None:
        raise ReferenceFetchError(Reason.UNSUPPORTED_FORMAT, f"{mime} cannot be decoded here")
    formats = (decoder,)
    _require_strict_truncation()
    try:
        return _decode(data, mime, formats, policy)
    except ReferenceFetchError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ReferenceFetchError(Reason.DECOMPRESSION_BOMB, str(exc)) from exc
    except Exception as exc:
        # Decoders fed hostile bytes raise all sorts (OSError, SyntaxError, struct.error,
        # IndexError...): whatever it is, the file did not decode.
        raise ReferenceFetchError(
            Reason.CORRUPT_IMAGE, f"{mime} failed to decode: {type(exc).__name__}: {exc}"
        ) from exc


def _decode(data: bytes, mime: str, formats: tuple[str, ...], policy: FetchPolicy) -> ImageInfo:
    with Image.open(io.BytesIO(data), formats=list(formats)) as image:
        width, height = image.size
        try:
            check_dimensions(image.size, policy.max_pixels)
        except DimensionError as exc:
            reason = Reason.DECOMPRESSION_BOMB if exc.oversized else Reason.CORRUPT_IMAGE
            raise ReferenceFetchError(reason, str(exc)) from exc
        image.load()
        return ImageInfo(mime, image.format or formats[0], width, height)


@dataclass
class _Progress:
    """Where an attempt is, so a deadline can be reported as timeout or slow_body."""

    in_body: bool = False
    body_bytes: int = 0


class ReferenceFetcher:
    """Async context manager owning one aiohttp session; fetch() is safe to call concurrently."""

    def __init__(self, policy: FetchPolicy | None = None, *, resolver: AddressResolver | None = None) -> None:
        self.policy = policy or FetchPolicy()
        self._resolver = resolver
        self._session: aiohttp.ClientSession | None = None

    @property
    def resolver(self) -> AddressResolver | None:
        """The resolver URL checks use (None: the system's), for callers that check URLs too."""
        return self._resolver

    async def __aenter__(self) -> Self:
        _require_strict_truncation()
        policy = self.policy
        connector = aiohttp.TCPConnector(
            limit_per_host=policy.per_host_concurrency,
            resolver=_PolicyResolver(policy),
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            # total is enforced per attempt by fetch() itself, to tell timeout from slow_body.
            timeout=aiohttp.ClientTimeout(
                total=None,
                connect=policy.connect_timeout_s,
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
        policy = self.policy
        attempt = 0
        while True:
            try:
                data, final_url = await self._attempt(url)
                break
            except ReferenceFetchError as exc:
                if not exc.retryable or attempt >= policy.retries:
                    raise
                delay = self._backoff(attempt)
                log.info(
                    "reference fetch attempt %d failed (%s), retrying in %.2fs",
                    attempt + 1,
                    exc.reason,
                    delay,
                )
                attempt += 1
                await asyncio.sleep(delay)
        info = await asyncio.to_thread(inspect_image, data, policy)
        return FetchedImage(
            data=data,
            content_type=info.content_type,
            width=info.width,
            height=info.height,
            format=info.format,
            final_url=final_url,
            sha256=sha256_hex(data),  # the digest its content-addressed key is made from
        )

    def _backoff(self, attempt: int) -> float:
        """Before retry number ``attempt + 1``. Jittered (many jobs citing one flaky CDN should
        not retry in lockstep) but at least half the step: a host that just failed gets a pause."""
        return jittered_delay(
            attempt + 1, self.policy.backoff_initial_s, self.policy.backoff_max_s, floor=0.5
        )

    async def _attempt(self, url: str) -> tuple[bytes, str]:
        progress = _Progress()
        try:
            async with asyncio.timeout(self.policy.total_timeout_s) as deadline:
                return await self._follow(url, progress)
        except TimeoutError as exc:
            if deadline.expired() and progress.in_body:
                raise ReferenceFetchError(
                    Reason.SLOW_BODY,
                    f"{progress.body_bytes} bytes within {self.policy.total_timeout_s}s",
                ) from exc
            which = "total deadline" if deadline.expired() else "connect or read timeout"
            raise ReferenceFetchError(Reason.TIMEOUT, which, retryable=True) from exc
        except aiohttp.ClientError as exc:
            raise _client_error(exc) from exc

    async def _follow(self, url: str, progress: _Progress) -> tuple[bytes, str]:
        session = self._session
        if session is None:
            raise RuntimeError("ReferenceFetcher used outside 'async with'")
        current: str | URL = url
        for _hop in range(self.policy.max_redirects + 1):
            target = await check_url(current, self.policy, self._resolver)
            async with session.get(target.url, allow_redirects=False) as response:
                if response.status in _REDIRECT_STATUSES:
                    current = _redirect_target(response)
                    continue
                _check_status(response)
                return await self._read_body(response, progress), str(response.url)
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
            self._check_throughput(len(body), time.monotonic() - started, response)
        return bytes(body)

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
