"""`lightbox bench pipeline`: N jobs through every stage with the CPU compositor.

Prints jobs/s, p50/p95 end-to-end latency, and the share of latency spent outside stage handlers:
1 - (sum of handler time on the job's path) / (accepted → published). That share is the
pipeline's own cost: Kafka hops, batching waits, polling, serialisation.
"""

from __future__ import annotations

import asyncio
import statistics
import time

from deploy.local.session import PipelineSession, StaticServer, expected_job_ids
from gateway.harness.sample_catalog import catalog_events, make_sample_products
from processors.config import Settings
from processors.eventlog.reader import EventLogReader
from processors.job_states import JobState


def _single_job_events(events: list[dict]) -> list[dict]:
    """The same jobs, one event per job (one locale each), so they can go one at a time."""
    single = []
    for event in events:
        for n, locale in enumerate(event["request"]["locales"]):
            copy = {
                **event,
                "event_id": f"{event['event_id']}-{n}",
                "request": {**event["request"], "locales": [locale]},
            }
            single.append(copy)
    return single


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def run_pipeline_bench(
    settings: Settings, jobs: int = 40, timeout_s: float = 600, mode: str = "burst"
) -> int:
    """burst: every job submitted at once (throughput; latency includes queueing).
    sequential: one job in flight at a time (latency is the pipeline's own, without queueing)."""
    run_id = time.strftime("%Y%m%d-%H%M%S")
    catalog_dir = settings.home / "bench" / run_id
    catalog_dir.mkdir(parents=True, exist_ok=True)
    samples = make_sample_products(catalog_dir)
    locales = ("en-US", "en-GB", "de-DE", "fr-FR", "es-ES", "it-IT", "nl-NL", "sv-SE")
    per_product = len(locales)
    products = [samples[i % len(samples)] for i in range(-(-jobs // per_product))]
    server = StaticServer(catalog_dir)
    session = PipelineSession(settings, prefix=f"bench-{run_id}.")
    try:
        session.start()
        events = []
        for i, product in enumerate(products):
            events += catalog_events([product], server.url, locales=locales, salt=f"{run_id}-{i}")
            # Distinct SKUs so every job is new work, not a de-duplicated repeat.
            events[-1]["product"]["sku"] = f"{product.sku}-{run_id}-{i}"
        job_ids = expected_job_ids(events)
        started = time.monotonic()
        if mode == "sequential":
            states = {}
            for event in _single_job_events(events):
                session.submit([event])
                states.update(session.wait_for(expected_job_ids([event]), timeout_s))
        else:
            session.submit(events)
            states = session.wait_for(job_ids, timeout_s)
        elapsed = time.monotonic() - started
        published = [j for j in job_ids if states.get(j) == JobState.PUBLISHED]
        latencies = asyncio.run(EventLogReader(session.settings).latencies(published))
        e2e = [v["end_to_end_ms"] for v in latencies.values() if v["end_to_end_ms"] > 0]
        handler = [v["handler_ms"] for v in latencies.values() if v["end_to_end_ms"] > 0]
        if not e2e:
            print("no job was published; see the stage logs in", session.log_dir)
            return 1
        overhead = 1 - sum(handler) / sum(e2e)
        print(f"mode: {mode}")
        print(f"jobs: {len(job_ids)} submitted, {len(published)} published in {elapsed:.1f} s")
        print(f"throughput: {len(published) / elapsed:.2f} jobs/s")
        print(
            f"end-to-end latency: p50 {_percentile(e2e, 0.5):.0f} ms, p95 {_percentile(e2e, 0.95):.0f} ms, "
            f"mean {statistics.mean(e2e):.0f} ms"
        )
        print(
            f"handler time per job: mean {statistics.mean(handler):.0f} ms; "
            f"share of latency outside handlers (pipeline overhead): {overhead:.1%}"
        )
        return 0
    finally:
        session.stop()
        server.close()
