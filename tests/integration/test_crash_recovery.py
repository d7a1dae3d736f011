"""Stages killed with SIGKILL mid-run and restarted lose no job and write no duplicate asset."""

from __future__ import annotations

import signal
import threading
from uuid import uuid4

import pytest

from deploy.local.session import expected_job_ids
from processors.imaging.derivatives import CHANNEL_DERIVATIVES
from processors.storage import ObjectStore
from processors.storage_keys import generated_prefix
from tests.support.catalog import events_for

pytestmark = pytest.mark.integration

KILLED_STAGES = {"intake", "references", "generate", "postprocess", "publish"}


def _kill_while_busy(
    pipeline, kills: int, interval_s: float, killed: list[str], stop: threading.Event
) -> None:
    for _ in range(kills):
        if stop.wait(interval_s):
            return
        for child in pipeline.supervisor.children:
            if child.stage in KILLED_STAGES and child.process and child.process.poll() is None:
                child.process.send_signal(signal.SIGKILL)
                killed.append(child.stage)


def test_sigkill_mid_run_loses_nothing_and_duplicates_nothing(pipeline, catalog_server) -> None:
    events = events_for(
        catalog_server,
        [0, 1, 2, 3],
        f"crash-{uuid4().hex[:6]}",
        channels=("web", "social"),
        locales=("en-US", "de-DE"),
    )
    job_ids = expected_job_ids(events)
    assert len(job_ids) == 16

    killed: list[str] = []
    stop = threading.Event()
    killer = threading.Thread(target=_kill_while_busy, args=(pipeline, 6, 0.7, killed, stop))
    pipeline.submit(events)
    killer.start()
    states = pipeline.wait_for(job_ids, timeout_s=300)
    stop.set()
    killer.join()

    assert len(killed) >= len(KILLED_STAGES), "stages must actually have been killed while jobs ran"
    assert {states.get(j) for j in job_ids} == {"published"}, states

    store = ObjectStore(pipeline.settings.storage)
    prefix = pipeline.settings.review.publish_prefix.rstrip("/")
    for event in events:
        sku = event["product"]["sku"]
        for job_id in expected_job_ids([event]):
            # Listed per job, not per SKU: other sessions on a shared stack may publish the same
            # sample SKUs under the same prefix.
            keys = list(store.list_keys(f"{prefix}/{sku}/{job_id}/"))
            # Each job's folder holds its channel's derivatives and one lineage file: a replayed
            # stage rewrote the same deterministic names instead of adding copies.
            channel = "web" if any("web" in k for k in keys) else "social"
            assert len(keys) == len(CHANNEL_DERIVATIVES[channel]) + 1, keys
    for job_id in job_ids:
        generated = list(store.list_keys(generated_prefix(job_id)))
        assert len(generated) == 1, generated
