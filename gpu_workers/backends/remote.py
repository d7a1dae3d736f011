"""A remote inference API over aiohttp.

Contract: ``POST {endpoint}/v1/generate`` with a JSON body per item::

    {"model", "prompt", "negative_prompt", "width", "height", "steps", "guidance", "seed",
     "sampler"}

and ``Authorization: Bearer <key>``; the answer is ``{"image_base64": ..., "model_version": ...}``.
Items of one batch go out concurrently (bounded). Server errors and timeouts are retried with
exponential backoff; a client error (4xx) is the request's fault and is not retried. Repeated
server-side failure trips a circuit breaker, after which generate() raises BackendUnavailable at
once so the failover moves on without paying timeouts.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import time
from dataclasses import dataclass

import aiohttp
from PIL import Image, UnidentifiedImageError

from gpu_workers.backends.base import (
    BackendUnavailable,
    GeneratedImage,
    GenerationItem,
)
from gpu_workers.backends.circuit import CircuitBreaker, CircuitOpenError, CircuitState
from gpu_workers.registry import ModelRegistry
from processors.backoff import jittered_delay

# 429 is the server asking us to slow down, not a malformed request: worth a retry.
RETRYABLE_4XX = frozenset({408, 429})


class RemoteRequestError(ValueError):
    """The API rejected this request (4xx) or answered with something unusable. Not retried."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class _Retryable(Exception):
    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class RemoteConfig:
    endpoint: str
    api_key: str = ""
    connect_timeout_s: float = 5.0
    total_timeout_s: float = 120.0
    retries: int = 3  # extra attempts after the first
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 10.0
    max_concurrency: int = 8
    health_path: str = "/healthz"


class RemoteBackend:
    name = "remote"

    def __init__(
        self,
        endpoint: str | RemoteConfig,
        api_key: str = "",
        *,
        registry: ModelRegistry | None = None,
        breaker: CircuitBreaker | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        """``RemoteBackend(url, key)`` with default timeouts, or ``RemoteBackend(RemoteConfig(...))``."""
        config = endpoint if isinstance(endpoint, RemoteConfig) else RemoteConfig(endpoint, api_key)
        self.config = config
        self.registry = registry
        self.breaker = breaker or CircuitBreaker(name=self.name)
        self._session = session
        self._owns_session = session is None
        self._url = config.endpoint.rstrip("/") + "/v1/generate"

    def batch_key(self, item: GenerationItem) -> tuple[object, ...]:
        # Each item is its own HTTP call, so batching only bounds concurrency; keep the key coarse.
        return (self.name, item.params.model)

    async def generate(self, items: list[GenerationItem]) -> list[GeneratedImage]:
        self.breaker.check()
        sem = asyncio.Semaphore(self.config.max_concurrency)

        async def one(item: GenerationItem) -> GeneratedImage:
            async with sem:
                return await self._generate_one(item)

        outcomes = await asyncio.gather(*(one(i) for i in items), return_exceptions=True)
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        if errors:
            # A down backend outranks a single bad request: the whole call should fail over.
            down = [e for e in errors if isinstance(e, BackendUnavailable)]
            raise (down or errors)[0]
        return [o for o in outcomes if isinstance(o, GeneratedImage)]

    async def healthy(self) -> bool:
        if self.breaker.is_open:
            return False
        url = self.config.endpoint.rstrip("/") + self.config.health_path
        timeout = aiohttp.ClientTimeout(total=self.config.connect_timeout_s)
        try:
            async with self._get_session().get(url, timeout=timeout) as resp:
                return resp.status < 400
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def close(self) -> None:
        if self._session is not None and self._owns_session:
            await self._session.close()
        self._session = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
            self._owns_session = True
        return self._session

    def _payload(self, item: GenerationItem) -> dict[str, object]:
        p = item.params
        model = p.model
        if self.registry is not None and model in self.registry:
            # The API may know the model by another name than our registry does.
            model = self.registry.get(model).option("remote_model", model)
        return {
            "model": model,
            "prompt": p.prompt,
            "negative_prompt": p.negative_prompt,
            "width": p.width,
            "height": p.height,
            "steps": p.steps,
            "guidance": p.guidance,
            "seed": p.seed,
            "sampler": p.sampler,
        }

    async def _generate_one(self, item: GenerationItem) -> GeneratedImage:
        payload = self._payload(item)
        attempts = self.config.retries + 1
        last: _Retryable | None = None
        for attempt in range(attempts):
            if attempt > 0:
                # Others may have tripped the breaker meanwhile. Half-open means this call is the
                # trial, so it keeps its retries.
                if self.breaker.state is CircuitState.OPEN:
                    raise CircuitOpenError(f"circuit {self.name!r} opened during retries")
                await asyncio.sleep(self._backoff(attempt, last))
            started = time.perf_counter()
            try:
                body = await self._post(payload)
            except _Retryable as exc:
                last = exc
                continue
            self.breaker.record_success()
            image = _decode_image(body, item.request_id)
            return GeneratedImage(
                request_id=item.request_id,
                image=image,
                model_version=str(body.get("model_version", "")),
                compute_ms=(time.perf_counter() - started) * 1000.0,
                extra={"attempts": str(attempt + 1), "remote_model": str(payload["model"])},
            )
        self.breaker.record_failure()
        raise BackendUnavailable(f"remote backend failed after {attempts} attempt(s): {last}")

    async def _post(self, payload: dict[str, object]) -> dict[str, object]:
        timeout = aiohttp.ClientTimeout(
            total=self.config.total_timeout_s, sock_connect=self.config.connect_timeout_s
        )
        headers = {"Authorization": f"Bearer {self.config.api_key}"} if self.config.api_key else {}
        session = self._get_session()
        try:
            async with session.post(self._url, json=payload, headers=headers, timeout=timeout) as resp:
                if resp.status >= 500 or resp.status in RETRYABLE_4XX:
                    raise _Retryable(f"HTTP {resp.status}", _retry_after(resp.headers.get("Retry-After")))
                if resp.status >= 400:
                    text = (await resp.text())[:200]
                    raise RemoteRequestError(f"HTTP {resp.status}: {text}", resp.status)
                try:
                    body = await resp.json(content_type=None)
                except ValueError as exc:
                    raise RemoteRequestError(f"response is not JSON: {exc}") from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            # Refused, reset, timed out, a body cut off, an endpoint that does not parse: the API
            # is unavailable to us, never this request's fault (that is a 4xx, above).
            raise _Retryable(f"{type(exc).__name__}: {exc}") from exc
        if not isinstance(body, dict):
            raise RemoteRequestError("response JSON is not an object")
        return body

    def _backoff(self, attempt: int, last: _Retryable | None) -> float:
        if last is not None and last.retry_after_s is not None:
            return min(last.retry_after_s, self.config.backoff_max_s)
        # Full jitter: many workers retrying the same outage must not hit it in lockstep.
        return jittered_delay(attempt, self.config.backoff_initial_s, self.config.backoff_max_s)


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def _decode_image(body: dict[str, object], request_id: str) -> Image.Image:
    raw = body.get("image_base64")
    if not isinstance(raw, str) or not raw:
        raise RemoteRequestError(f"{request_id}: response has no image_base64")
    try:
        image = Image.open(io.BytesIO(base64.b64decode(raw, validate=True)))
        image.load()
    except (binascii.Error, UnidentifiedImageError, OSError) as exc:
        raise RemoteRequestError(f"{request_id}: image does not decode: {exc}") from exc
    return image.convert("RGB")
