"""A remote inference API on 127.0.0.1 speaking the contract of gpu_workers/backends/remote.py,
for tests that need a second backend drawing other pixels than the compositor, one that refuses
a request (422 for a prompt containing `refuse_word`), or one that is down (`stop()`: the port
refuses connections, as a crashed API's would)."""

from __future__ import annotations

import base64
import io
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from PIL import Image


@dataclass
class InferenceAPI:
    refuse_word: str = "poison"
    model_version: str = "fake-remote-1"
    prompts: Counter[str] = field(default_factory=Counter)  # requests received, by prompt
    _runner: web.AppRunner | None = None
    port: int = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> InferenceAPI:
        """Serve (again, on the same port once it had one)."""
        app = web.Application()
        app.router.add_post("/v1/generate", self._generate)
        app.router.add_get("/healthz", self._health)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _generate(self, request: web.Request) -> web.Response:
        body: dict[str, Any] = await request.json()
        prompt = str(body["prompt"])
        self.prompts[prompt] += 1
        if self.refuse_word and self.refuse_word in prompt:
            return web.json_response({"error": "content policy"}, status=422)
        seed = int(body["seed"])
        # A flat colour from the seed: deterministic, and nothing like a compositor scene.
        image = Image.new("RGB", (int(body["width"]), int(body["height"])), (seed % 251, 40, 200))
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        payload = {
            "image_base64": base64.b64encode(buf.getvalue()).decode(),
            "model_version": self.model_version,
        }
        return web.json_response(payload)

    async def _health(self, _: web.Request) -> web.Response:
        return web.Response(text="ok")
