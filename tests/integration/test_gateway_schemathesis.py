"""The gateway against its own contract: schemathesis draws requests for every operation of the
served /openapi.json (valid and invalid ones) and sends them to a real gateway on the real stack.
No answer may be a 5xx; every answer must be one the document declares, in the declared content
type and schema; every error must be problem+json.

Bounded for CI: SCHEMATHESIS_EXAMPLES (default 12) examples per operation. The gateway publishes
under a topic prefix of its own that no stage consumes, so the drawn catalog events (with their
made-up reference URLs) are never fetched by anyone."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from deploy.local.stack import LocalStack
from gateway.web.app import build_app
from gateway.web.openapi import document
from processors.config import Settings
from schemas.compat import unregister
from tests.integration import test_gateway_api as shared

pytestmark = pytest.mark.integration

gateway_settings, tokens = shared.gateway_settings, shared.tokens
EXAMPLES = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "12"))
PROBLEM = "application/problem+json"


class ServedGateway:
    """The gateway on a free loopback port, served from a thread of its own (schemathesis's
    client is synchronous)."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.runner = web.AppRunner(app, shutdown_timeout=1)
        self.url = ""

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"
        self.ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.runner.cleanup())

    def __enter__(self) -> ServedGateway:
        self.thread.start()
        assert self.ready.wait(30), "the gateway did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)


@pytest.fixture(scope="module")
def served(gateway_settings: Settings) -> Iterator[ServedGateway]:
    prefix = f"test-schemathesis-{uuid.uuid4().hex[:8]}."
    settings = gateway_settings.model_copy(
        update={"kafka": gateway_settings.kafka.model_copy(update={"topic_prefix": prefix})}
    )
    stack = LocalStack(settings, progress=lambda _: None)
    stack.ensure_topics()
    stack.ensure_schemas()  # the topics carry Confluent-framed Avro: the prefix's subjects first
    try:
        with ServedGateway(build_app(settings)) as gateway:
            yield gateway
    finally:
        unregister(settings)


# The document the gateway serves at /openapi.json (test_openapi.py checks that they are one),
# loaded at collection so each operation is a test of its own.
schema = schemathesis.openapi.from_dict(document())


def problem_json_errors(ctx: Any, response: Any, case: Any) -> None:
    """Every 4xx and 5xx is problem+json with type, title, status and detail."""
    if response.status_code < 400:
        return
    headers = {name.lower(): value for name, value in response.headers.items()}
    content_type = headers.get("content-type", [""])
    content_type = content_type[0] if isinstance(content_type, list) else content_type
    assert content_type.split(";")[0].strip() == PROBLEM, f"{response.status_code} as {content_type!r}"
    body = json.loads(response.content)
    missing = {"type", "title", "status", "detail"} - set(body)
    assert not missing, f"problem without {sorted(missing)}: {body}"
    assert body["status"] == response.status_code


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_the_gateway_keeps_its_contract(case: Any, served: ServedGateway, tokens: dict[str, str]) -> None:
    case.call_and_validate(
        base_url=served.url,
        headers={"Authorization": f"Bearer {tokens['admin']}"},
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
            problem_json_errors,
        ],
    )
