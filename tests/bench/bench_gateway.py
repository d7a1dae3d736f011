"""The HTTP gateway under load on loopback: POST /v1/requests and GET /v1/jobs/{id}, requests/s and
p50/p95 latency at a fixed concurrency (an aiohttp client; one connection per worker).

    python -m tests.bench.bench_gateway [--requests 2000] [--concurrency 32] [--jobs 200]

Needs the stack (`lightbox stack up`). Runs, under a throwaway topic prefix, the event-log sink
(`lightbox run eventlog`, embedded ClickHouse in a temporary directory) and the gateway
(`lightbox serve`) as processes of their own, as in production, with tokens in a temporary
file. The load generator is this process. POST sends distinct valid catalog events (each
validated as intake would, produced and acknowledged by Kafka, answered with its job ids); no
stage consumes them, so the figure is the gateway's alone. GET reads the detail of jobs whose
events were written to the event log beforehand (timeline through the sink, lineage lookups in
MinIO, presigned URLs). Both figures share the machine with the sink, Kafka and MinIO.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from deploy.local.session import free_port
from deploy.local.stack import LocalStack
from gateway.harness.sample_catalog import catalog_events, make_sample_products
from gateway.ops.tokens import TokenStore
from processors.config import load_settings
from processors.kafka_clients import make_producer, produce_and_confirm
from schemas.compat import unregister
from schemas.serde import AvroSerde
from schemas.topics import Topic, TopicNames


@dataclass
class Figures:
    route: str
    requests: int
    seconds: float
    latencies_ms: list[float]
    errors: int

    def line(self) -> str:
        ordered = sorted(self.latencies_ms)
        p95 = ordered[int(0.95 * (len(ordered) - 1))]
        return (
            f"{self.route:<22} {self.requests:>6} {self.requests / self.seconds:>9.0f} "
            f"{statistics.median(ordered):>8.1f} {p95:>8.1f} {self.errors:>6}"
        )


async def load(url: str, make: Any, requests: int, concurrency: int, route: str, expect: int) -> Figures:
    """`requests` calls of make(session, i) from `concurrency` workers; latency per call."""
    latencies: list[float] = []
    errors = 0
    counter = iter(range(requests))

    async def worker() -> None:
        nonlocal errors
        connector = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(url, connector=connector) as session:
            for i in counter:
                started = time.perf_counter()
                async with make(session, i) as response:
                    await response.read()
                    if response.status != expect:
                        errors += 1
                latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Figures(route, requests, time.perf_counter() - started, latencies, errors)


def _event_value(job_id: str, stage: str, state: str, at: int, **attributes: str) -> dict[str, Any]:
    return {
        "event_id": f"{job_id}-{stage}-{state}",
        "job_id": job_id,
        "stage": stage,
        "state": state,
        "at": at,
        "duration_ms": 1.0,
        "reason": "",
        "detail": "",
        "attempt": 0,
        "attributes": attributes,
        "submitted_at": at,
        "worker": "bench",
    }


def seed_jobs(settings: Any, prefix: str, jobs: int) -> list[str]:
    """Events of `jobs` finished jobs on the prefix's events topic, for the sink to store."""
    topic = TopicNames(prefix)(Topic.PIPELINE_EVENTS)
    serde, now = AvroSerde("pipeline_event"), int(time.time() * 1000)
    ids = [f"bench-{uuid.uuid4().hex[:12]}" for _ in range(jobs)]
    messages = []
    for n, job_id in enumerate(ids):
        at = now - 60_000 + n
        for step, (stage, state, attrs) in enumerate(
            [
                ("intake", "pending", {"sku": f"BENCH-{n}"}),
                ("prompt", "running", {"template": "studio-hero@v1", "model": "compositor"}),
                ("quality", "completed", {"score.overall": "0.9100", "score.preservation": "0.8800"}),
                ("publish", "approved", {"reviewer": "policy:auto"}),
            ]
        ):
            value = _event_value(job_id, stage, state, at + step, **attrs)
            messages.append((topic, job_id.encode(), serde.encode(value), None))
    produce_and_confirm(make_producer(settings), messages)
    return ids


async def wait_for(url: str, path: str, headers: dict[str, str], timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(url + path, headers=headers) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url}{path} did not answer 200 within {timeout_s}s")
            await asyncio.sleep(0.5)


async def run(requests: int, concurrency: int, jobs: int) -> list[Figures]:
    settings = load_settings()
    prefix = f"bench-gw-{uuid.uuid4().hex[:8]}."
    stack = LocalStack(settings, progress=lambda _: None)
    stack.ensure_topics(prefix)
    stack.ensure_schemas(prefix)  # the topics carry Confluent-framed Avro
    work = Path(tempfile.mkdtemp(prefix="lightbox-bench-gateway-"))
    query_port, port = free_port(), free_port()
    env = {
        **os.environ,
        "LIGHTBOX_KAFKA__TOPIC_PREFIX": prefix,
        "LIGHTBOX_CLICKHOUSE__EMBEDDED_PATH": str(work / "clickhouse"),
        "LIGHTBOX_CLICKHOUSE__QUERY_PORT": str(query_port),
        "LIGHTBOX_GATEWAY__TOKENS_FILE": str(work / "tokens.json"),
        "LIGHTBOX_GATEWAY__SESSION_KEY_FILE": str(work / "session.key"),
        "LIGHTBOX_LOG_LEVEL": "WARNING",
    }
    gateway_settings = settings.model_copy(
        update={"gateway": settings.gateway.model_copy(update={"tokens_file": str(work / "tokens.json")})}
    )
    store = TokenStore.of(gateway_settings)
    submitter, analyst = (
        store.create("bench-submitter", "submitter")[1],
        store.create("bench-analyst", "analyst")[1],
    )
    cli = [sys.executable, "-m", "gateway.cli.main"]
    logs = (work / "sink.log").open("wb"), (work / "gateway.log").open("wb")
    sink = subprocess.Popen([*cli, "run", "eventlog"], env=env, stdout=logs[0], stderr=subprocess.STDOUT)
    gateway = subprocess.Popen(
        [*cli, "serve", "--port", str(port)], env=env, stdout=logs[1], stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        ids = await asyncio.to_thread(seed_jobs, settings, prefix, jobs)
        await wait_for(url, f"/v1/jobs/{ids[-1]}", {"Authorization": f"Bearer {analyst}"})
        products = make_sample_products(work / "products")
        base = catalog_events(products[:1], "http://127.0.0.1:9")[0]

        def post(session: aiohttp.ClientSession, i: int) -> Any:
            event = {**base, "event_id": f"bench-{prefix}{i}"}
            event["product"] = {**base["product"], "sku": f"BENCH-{i}"}  # type: ignore[dict-item]
            return session.post("/v1/requests", json=event, headers={"Authorization": f"Bearer {submitter}"})

        def get(session: aiohttp.ClientSession, i: int) -> Any:
            return session.get(
                f"/v1/jobs/{ids[i % len(ids)]}", headers={"Authorization": f"Bearer {analyst}"}
            )

        await load(url, post, 2 * concurrency, concurrency, "warm-up", 202)
        await load(url, get, 2 * concurrency, concurrency, "warm-up", 200)
        return [
            await load(url, post, requests, concurrency, "POST /v1/requests", 202),
            await load(url, get, requests, concurrency, "GET /v1/jobs/{id}", 200),
        ]
    finally:
        for process in (gateway, sink):
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
        for log in logs:
            log.close()
        kafka = settings.kafka.model_copy(update={"topic_prefix": prefix})
        unregister(settings.model_copy(update={"kafka": kafka}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per route (default 2000)")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight (default 32)")
    parser.add_argument(
        "--jobs", type=int, default=200, help="jobs in the event log for the GETs (default 200)"
    )
    args = parser.parse_args()
    figures = asyncio.run(run(args.requests, args.concurrency, args.jobs))
    print(f"concurrency {args.concurrency}, {os.cpu_count()} CPUs")
    print(f"{'route':<22} {'n':>6} {'req/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'errors':>6}")
    for row in figures:
        print(row.line())


if __name__ == "__main__":
    main()
