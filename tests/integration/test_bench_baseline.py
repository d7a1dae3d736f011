"""The bench's baseline runs the shipped stages' handlers in flow order against real MinIO, with
no Kafka: every job it is given ends published, with the CPU each stage took recorded."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from deploy.local.session import StaticServer, expected_job_ids
from deploy.local.stack import LocalStack
from gateway.harness.baseline import BASELINE_STAGES, BaselineResult, run_baseline
from gateway.harness.bench import _baseline_settings, _cpu_since, _events, _service_cpu
from gateway.harness.sample_catalog import make_sample_products
from processors.config import Settings
from processors.storage import ObjectStore

pytestmark = pytest.mark.integration


def _run(
    stack_settings: Settings, directory: Path, warmup: bool
) -> tuple[Settings, BaselineResult, list[dict[str, Any]], list[dict[str, Any]]]:
    """The baseline on one product's jobs (one per locale), with another product's first if
    ``warmup``: its settings, result, and the measured and warm-up catalog events."""
    samples = make_sample_products(directory)
    server = StaticServer(directory)
    run_id = f"test-{time.time_ns()}"
    settings = _baseline_settings(stack_settings, run_id)
    try:
        events = _events(samples[:1], server.url, 3, run_id)
        warm = _events(samples[1:2], server.url, 8, f"{run_id}-warmup") if warmup else []
        result = asyncio.run(run_baseline(settings, events, warm))
    finally:
        server.close()
    return settings, result, events, warm


def test_the_baseline_publishes_every_job_through_the_stages_handlers(
    stack_settings: Settings, tmp_path: Path
) -> None:
    settings, result, events, _ = _run(stack_settings, tmp_path, warmup=False)
    job_ids = expected_job_ids(events)
    assert result.jobs == len(job_ids) == 8  # one product, a job per locale
    assert result.outcomes == dict.fromkeys(job_ids, "published")
    assert result.published == 8 and result.jobs_per_s > 0
    assert set(result.cpu_s) == set(BASELINE_STAGES)
    assert all(result.cpu_s[stage] > 0 for stage in ("generate", "quality", "postprocess"))
    # What it published is in storage, as the pipeline's publish stage leaves it.
    store = ObjectStore(settings.storage)
    published = [k for k in store.list_keys(settings.review.publish_prefix) if any(j in k for j in job_ids)]
    assert published, "the baseline's publish handler stored the published files"


def test_warm_up_jobs_run_through_the_handlers_but_are_not_counted(
    stack_settings: Settings, tmp_path: Path
) -> None:
    settings, result, events, warm = _run(stack_settings, tmp_path, warmup=True)
    measured, warmed = expected_job_ids(events), expected_job_ids(warm)
    assert result.jobs == result.published == 8
    assert set(result.outcomes) == set(measured)
    store = ObjectStore(settings.storage)
    (sku,) = {event["product"]["sku"] for event in warm}
    keys = list(store.list_keys(f"{settings.review.publish_prefix.rstrip('/')}/{sku}/"))
    # The warm-up jobs were real work: published like the measured ones, before them.
    assert all(any(j in k for k in keys) for j in warmed)


def test_the_bench_reads_the_cpu_of_the_services_this_home_started(stack_settings: Settings) -> None:
    """The services share the cores with the stages, so the bench reports their CPU too: from the
    pid files of `lightbox stack up`, for the services this home started (under testcontainers
    none is, and the bench says it did not measure them)."""
    services = LocalStack(stack_settings, progress=lambda _: None).services
    ours = {service.name for service in services if service.pid() is not None}
    before = _service_cpu(stack_settings)
    assert set(before) == ours
    if not ours:
        return
    assert ours == {"kafka", "minio", "registry"}
    assert all(seconds > 0 for seconds in before.values()), "a running JVM or MinIO has used some CPU"
    # MinIO's own CPU rises with work sent to it (about 2 ms of it a small PUT; a tick is 10 ms).
    store = ObjectStore(stack_settings.storage)
    for i in range(100):
        store.put_bytes(f"bench-test/cpu-{i}", b"x" * 65536)
    used = _cpu_since(before, _service_cpu(stack_settings))
    assert set(used) == ours
    assert used["minio"] > 0
