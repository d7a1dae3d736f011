"""Stages killed with SIGKILL mid-batch and restarted lose no job and write no duplicate asset."""

from __future__ import annotations

import signal
import threading
import time

import pytest

from gateway.session import expected_job_ids
from processors.storage import ObjectStore
from tests.integration.catalog import events_for

pytestmark = pytest.mark.integration


def _kill_repeatedly(pipeline, stages: set[str], kills: int, interval_s: float, killed: list[str]) -> None:
    for _ in range(kills):
        time.sleep(interval_s)
        for child in pipeline.supervisor.children:
            if child.stage in stages and child.process and child.process.poll() is None:
                child.process.send_signal(signal.SIGKILL)
                killed.append(child.stage)


def test_sigkill_mid_batch_loses_nothing_and_duplicates_nothing(pipeline, catalog_server) -> None:
    events = events_for(catalog_server, [0, 1, 2, 3], "crash", channels=("web", "social"))
    job_ids = expected_job_ids(events)
    assert len(job_ids) == 8

    killed: list[str] = []
    killer = threading.Thread(
        target=_kill_repeatedly,
        args=(pipeline, {"generate", "postprocess", "publish"}, 3, 1.0, killed),
    )
    pipeline.submit(events)
    killer.start()
    states = pipeline.wait_for(job_ids, timeout_s=240)
    killer.join()

    assert killed, "the test must actually kill stages"
    assert {states.get(j) for j in job_ids} == {"published"}, states

    store = ObjectStore(pipeline.settings.storage)
    prefix = pipeline.settings.review.publish_prefix.rstrip("/")
    for event in events:
        sku = event["product"]["sku"]
        published_jobs = {k.split("/")[-2] for k in store.list_keys(f"{prefix}/{sku}/")}
        assert published_jobs <= set(job_ids)
    for job_id in job_ids:
        # One generation attempt, one image: a replayed batch rewrote the same key.
        generated = list(store.list_keys(f"generated/{job_id}/"))
        assert len(generated) == 1, generated
