"""What the page tests share: tokens, a held job parked in storage, the gateway on a real port,
Debian's Chromium, and the folder screenshots are saved in."""

from __future__ import annotations

import asyncio
import copy
import io
import os
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import web
from PIL import Image

from deploy.local.session import free_port
from gateway.ops.tokens import Role, TokenStore
from gateway.web.app import build_app
from processors.config import Settings
from processors.storage import ObjectStore
from processors.storage_keys import content_key, decided_key, generated_key, pending_key
from schemas.serde import AvroSerde
from tests.fixtures.avro_samples import JOB_V1

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
HOSTILE_TITLE = "Mug <script>alert('x')</script> & co"
T = TypeVar("T")


def launch_chromium(playwright: Any) -> Any:
    """Debian's Chromium: scripts/bootstrap.sh installs it, so a missing one fails the test (a
    skip would let the page tests silently stop running)."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/bootstrap.sh (apt-get install -y chromium)")
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)


def in_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run a blocking call that makes its own event loop (asyncio.run) on another thread:
    Playwright's sync API keeps a loop running on the test's thread while a browser is open."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn, *args).result()


def with_own_tokens(settings: Settings, directory: Path) -> Settings:
    """The settings with a token file and session key of the test's own, never the user's."""
    gateway = settings.gateway.model_copy(
        update={
            "tokens_file": str(directory / "tokens.json"),
            "session_key_file": str(directory / "session.key"),
        }
    )
    return settings.model_copy(update={"gateway": gateway})


def make_token(settings: Settings, name: str, role: Role) -> str:
    _, token = TokenStore.of(settings).create(name, role)
    return token


def output_dir(settings: Settings, name: str) -> Path:
    """Where a test's screenshots go: $LIGHTBOX_TEST_OUTPUT, else <home>/test-output; printed."""
    root = Path(os.environ.get("LIGHTBOX_TEST_OUTPUT") or settings.home / "test-output")
    path = root / name / time.strftime("%Y%m%d-%H%M%S")
    path.mkdir(parents=True, exist_ok=True)
    print(f"screenshots: {path}")
    return path


def png(colour: tuple[int, int, int], size: int = 64) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, "PNG")
    return buf.getvalue()


def park_held_job(store: ObjectStore, prefix: str, tag: str) -> tuple[dict[str, Any], bytes, bytes]:
    """A job whose quality gate failed, parked under review/pending/ exactly as the publish stage
    does, with its generated image and its stored product reference in storage. Returns the job,
    the generated image and the reference's bytes."""
    image, reference = png((200, 40, 40)), png((20, 90, 200), 48)
    job = copy.deepcopy(JOB_V1)
    job["job_id"] = f"pages-{tag}-{uuid.uuid4().hex[:8]}"
    job["product"].update(sku=f"SKU-PAGES-{tag}-{uuid.uuid4().hex[:6]}", title=HOSTILE_TITLE)
    digest = uuid.uuid4().hex * 2  # stands for the image's sha256: only its shape matters here
    job["asset_key"] = generated_key(job["job_id"], 0, 0, digest)
    ref_key = content_key("refs", uuid.uuid4().hex * 2, "png")
    job["references"] = [{**job["references"][0], "key": ref_key, "width": 48, "height": 48}]
    job["quality"] = {
        "passed": False,
        "scores": {"preservation": 0.41, "blank": 0.12},
        "reasons": ["product preservation 0.41 is below 0.60"],
        "chosen_index": 0,
    }
    store.put_bytes(job["asset_key"], image, "image/png")
    store.put_bytes(ref_key, reference, "image/png")
    store.put_bytes(pending_key(job["job_id"], prefix), AvroSerde("job").encode(job), "avro/binary")
    return job, image, reference


def remove_parked(store: ObjectStore, prefix: str, job: dict[str, Any]) -> None:
    keys = [pending_key(job["job_id"], prefix), decided_key(job["job_id"], prefix), job["asset_key"]]
    keys += [ref["key"] for ref in job["references"]]
    for key in keys:
        store.client.remove_object(store.bucket, key)


class LiveGateway:
    """The gateway app on 127.0.0.1:<free port>, served from a thread with its own event loop,
    for a browser to open."""

    def __init__(self, settings: Settings) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="gateway", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(settings), self._loop).result(60)

    async def _start(self, settings: Settings) -> None:
        self._runner = web.AppRunner(build_app(settings))
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def close(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(60)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
