"""Circuit breaker, the remote backend against a real local HTTP server, and failover."""

from __future__ import annotations

import base64
import io
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from PIL import Image

from gpu_workers.backends.base import (
    BackendUnavailable,
    GeneratedImage,
    GenerationItem,
    GenerationParams,
)
from gpu_workers.backends.circuit import CircuitBreaker, CircuitOpenError, CircuitState
from gpu_workers.backends.remote import RemoteBackend, RemoteConfig, RemoteRequestError
from gpu_workers.failover import AllBackendsUnavailable, Choice, FailoverGenerator


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# -- breaker state machine -----------------------------------------------------------------


def test_breaker_opens_after_consecutive_failures_and_recovers() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=3, reset_timeout_s=10, clock=clock)
    for _ in range(2):
        assert breaker.allow()
        breaker.record_failure()
    breaker.record_success()  # a success resets the count: failures must be consecutive
    for _ in range(3):
        assert breaker.allow()
        breaker.record_failure()
    assert breaker.state is CircuitState.OPEN and breaker.is_open
    assert not breaker.allow()
    with pytest.raises(CircuitOpenError):
        breaker.check()

    clock.now += 10
    assert breaker.state is CircuitState.HALF_OPEN and not breaker.is_open
    assert breaker.allow()  # the one trial
    assert not breaker.allow() and breaker.is_open  # everyone else waits for it
    breaker.record_success()
    assert breaker.state is CircuitState.CLOSED and breaker.allow()


def test_failed_trial_reopens_for_a_full_cool_down() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout_s=5, clock=clock)
    breaker.record_failure()
    clock.now += 5
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state is CircuitState.OPEN
    clock.now += 4.9
    assert not breaker.allow()
    clock.now += 0.1
    assert breaker.allow()


def test_abandoned_trial_does_not_wedge_half_open() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout_s=5, clock=clock)
    breaker.record_failure()
    clock.now += 5
    assert breaker.allow()  # trial taken, caller never reports back
    clock.now += 5
    assert breaker.allow()


# -- remote backend against a real server --------------------------------------------------


def _png_b64(color: tuple[int, int, int], size: tuple[int, int]) -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


@dataclass
class FlakyServer:
    """Fails the first ``failures`` requests with ``status``, then answers properly."""

    failures: int = 0
    status: int = 503
    requests: list[dict[str, object]] = field(default_factory=list)
    auth: list[str] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        self.auth.append(request.headers.get("Authorization", ""))
        if len(self.requests) <= self.failures:
            return web.json_response({"error": "busy"}, status=self.status)
        if body["prompt"] == "forbidden":
            return web.json_response({"error": "policy"}, status=422)
        size = (int(body["width"]), int(body["height"]))  # type: ignore[call-overload]
        seed = int(body["seed"])  # type: ignore[call-overload]
        return web.json_response(
            {"image_base64": _png_b64((seed % 256, 10, 20), size), "model_version": "remote-v7"}
        )


async def _ok(_: web.Request) -> web.Response:
    return web.Response(text="ok")


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[FlakyServer], object]]:
    runners: list[web.AppRunner] = []

    async def start(server: FlakyServer) -> str:
        app = web.Application()
        app.router.add_post("/v1/generate", server.handle)
        app.router.add_get("/healthz", _ok)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        return f"http://127.0.0.1:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _item(seed: int = 1, prompt: str = "a lamp", model: str = "xl") -> GenerationItem:
    params = GenerationParams(
        model=model,
        width=24,
        height=16,
        steps=4,
        guidance=5.0,
        sampler="euler",
        seed=seed,
        prompt=prompt,
        negative_prompt="blurry",
    )
    return GenerationItem(request_id=f"job-{seed}#0", params=params)


def _config(endpoint: str, **kw: float) -> RemoteConfig:
    defaults = {"retries": 3, "backoff_initial_s": 0.01, "backoff_max_s": 0.02}
    defaults.update(kw)
    return RemoteConfig(endpoint=endpoint, api_key="k3y", total_timeout_s=2.0, **defaults)  # type: ignore[arg-type]


async def test_remote_retries_5xx_then_succeeds(serve: Callable) -> None:
    server = FlakyServer(failures=2, status=503)
    backend = RemoteBackend(_config(await serve(server)))
    try:
        [result] = await backend.generate([_item(seed=7)])
    finally:
        await backend.close()
    assert result.image.size == (24, 16) and result.image.getpixel((0, 0)) == (7, 10, 20)
    assert result.model_version == "remote-v7" and result.extra["attempts"] == "3"
    assert len(server.requests) == 3 and set(server.auth) == {"Bearer k3y"}
    assert server.requests[-1] == {
        "model": "xl",
        "prompt": "a lamp",
        "negative_prompt": "blurry",
        "width": 24,
        "height": 16,
        "steps": 4,
        "guidance": 5.0,
        "seed": 7,
        "sampler": "euler",
    }
    assert backend.breaker.state is CircuitState.CLOSED


async def test_remote_does_not_retry_4xx(serve: Callable) -> None:
    server = FlakyServer()
    backend = RemoteBackend(_config(await serve(server)))
    try:
        with pytest.raises(RemoteRequestError) as err:
            await backend.generate([_item(prompt="forbidden")])
        assert err.value.status == 422
        assert len(server.requests) == 1
        # The request's fault, not the backend's: the breaker does not count it.
        assert backend.breaker.consecutive_failures == 0
        assert await backend.healthy()
    finally:
        await backend.close()


async def test_remote_batch_keeps_order(serve: Callable) -> None:
    server = FlakyServer()
    backend = RemoteBackend(await serve(server), "k3y")  # the worker's short form
    try:
        results = await backend.generate([_item(seed=s) for s in (3, 1, 2)])
    finally:
        await backend.close()
    assert [r.request_id for r in results] == ["job-3#0", "job-1#0", "job-2#0"]
    assert set(server.auth) == {"Bearer k3y"}


async def test_breaker_opens_on_a_down_server_and_fails_fast() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=2, reset_timeout_s=30, clock=clock)
    down = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    backend = RemoteBackend(_config(down, retries=1), breaker=breaker)
    try:
        for _ in range(2):
            with pytest.raises(BackendUnavailable, match="after 2 attempt"):
                await backend.generate([_item()])
        assert breaker.state is CircuitState.OPEN
        with pytest.raises(CircuitOpenError):
            await backend.generate([_item()])
        assert not await backend.healthy()
    finally:
        await backend.close()


async def test_half_open_trial_closes_the_circuit_when_the_server_is_back(
    serve: Callable,
) -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout_s=30, clock=clock)
    server = FlakyServer(failures=2, status=500)
    backend = RemoteBackend(_config(await serve(server), retries=1), breaker=breaker)
    try:
        with pytest.raises(BackendUnavailable):
            await backend.generate([_item()])
        assert breaker.state is CircuitState.OPEN
        with pytest.raises(CircuitOpenError):
            await backend.generate([_item()])
        assert len(server.requests) == 2  # the open circuit sent nothing
        clock.now += 30
        [result] = await backend.generate([_item()])
        assert result.model_version == "remote-v7"
        assert breaker.state is CircuitState.CLOSED
    finally:
        await backend.close()


# -- failover ------------------------------------------------------------------------------


@dataclass
class LocalBackend:
    """A model-free backend like the compositor: always answers."""

    name: str = "compositor"
    seen_models: list[str] = field(default_factory=list)

    def batch_key(self, item: GenerationItem) -> tuple[object, ...]:
        return (item.params.model,)

    async def generate(self, items: list[GenerationItem]) -> list[GeneratedImage]:
        self.seen_models.extend(i.params.model for i in items)
        return [GeneratedImage(i.request_id, Image.new("RGB", (8, 8)), "local-1", 1.0) for i in items]

    async def healthy(self) -> bool:
        return True


async def test_failover_skips_a_down_backend_and_records_it() -> None:
    down = RemoteBackend(
        _config(f"http://127.0.0.1:{_free_port()}", retries=0),
        breaker=CircuitBreaker(failure_threshold=1, reset_timeout_s=60),
    )
    local = LocalBackend()
    failover = FailoverGenerator({"remote": down, "compositor": local})
    choices = [Choice("remote", "xl"), ("compositor", "studio")]
    try:
        outcome = await failover.generate([_item(1), _item(2)], choices)
        assert outcome.fell_back_from == "remote"
        assert outcome.served_by == Choice("compositor", "studio")
        assert local.seen_models == ["studio", "studio"]
        assert [s.choice.backend for s in outcome.skipped] == ["remote"]
        assert outcome.results[0].extra == {"backend": "compositor", "fell_back_from": "remote"}

        # Now the breaker is open: the remote backend is skipped without a connection attempt.
        outcome = await failover.generate([_item(3)], choices)
        assert outcome.skipped[0].reason == "circuit open"
    finally:
        await down.close()


async def test_failover_primary_serves_and_errors_propagate(serve: Callable) -> None:
    remote = RemoteBackend(_config(await serve(FlakyServer())))
    failover = FailoverGenerator({"remote": remote, "compositor": LocalBackend()})
    try:
        outcome = await failover.generate([_item()], [("remote", "xl"), ("compositor", "s")])
        assert outcome.fell_back_from is None and outcome.served_by.backend == "remote"
        # A bad request is not a reason to fail over: it fails the item.
        with pytest.raises(RemoteRequestError):
            await failover.generate([_item(prompt="forbidden")], [("remote", "xl"), ("compositor", "s")])
    finally:
        await remote.close()


async def test_failover_all_unavailable() -> None:
    failover = FailoverGenerator({})
    with pytest.raises(AllBackendsUnavailable, match="ghost/m: backend not configured"):
        await failover.generate([_item()], [("ghost", "m")])
