"""`lightbox demo`: the whole product on a sample catalog, on this machine, in one command."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from tqdm import tqdm

from deploy.local.session import PipelineSession, StaticServer, expected_job_ids
from gateway.cli.report import print_summary
from gateway.harness.sample_catalog import catalog_events, make_sample_products
from processors.config import Settings
from processors.eventlog.reader import EventLogReader
from processors.job_states import is_terminal
from processors.storage import ObjectStore


def download_published(settings: Settings, out_dir: Path) -> int:
    """Copy what was published to a folder a person can open."""
    store = ObjectStore(settings.storage)
    prefix = settings.review.publish_prefix
    count = 0
    for key in store.list_keys(prefix):
        target = out_dir / key[len(prefix) :]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(store.get_bytes(key))
        count += 1
    return count


def run_demo(
    settings: Settings, products: int = 6, timeout_s: float = 300, keep_running: bool = False
) -> int:
    run_id = time.strftime("%Y%m%d-%H%M%S")
    run_dir = settings.home / "demo" / run_id
    catalog_dir = run_dir / "catalog"
    catalog_dir.mkdir(parents=True, exist_ok=True)
    samples = make_sample_products(catalog_dir)[:products]
    print(f"sample catalog: {len(samples)} products drawn into {catalog_dir}")

    server = StaticServer(catalog_dir)
    # Each run publishes under its own prefix so runs never overwrite each other.
    publish_prefix = f"published/demo-{run_id}/"
    session = PipelineSession(
        settings.model_copy(
            update={"review": settings.review.model_copy(update={"publish_prefix": publish_prefix})}
        ),
        prefix=f"demo-{run_id}.",
        env={"LIGHTBOX_REVIEW__PUBLISH_PREFIX": publish_prefix},
    )
    try:
        session.start()
        events = catalog_events(samples, server.url, channels=("web", "marketplace"), salt=run_id)
        for event in events:
            # Each run is new work: the same SKUs again would (rightly) be de-duplicated by intake.
            event["product"]["sku"] = f"{event['product']['sku']}-{run_id}"
        (run_dir / "catalog.jsonl").write_text("\n".join(json.dumps(e) for e in events) + "\n")
        job_ids = expected_job_ids(events)
        started_ms = int(time.time() * 1000)
        session.submit(events)
        print(f"submitted {len(events)} catalog events ({run_dir / 'catalog.jsonl'}) → {len(job_ids)} jobs")
        with tqdm(total=len(job_ids), desc="jobs finished", unit="job") as bar:

            def progress(done: int, total: int) -> None:
                bar.n = done
                bar.refresh()

            states = session.wait_for(job_ids, timeout_s, progress)
        unfinished = [j for j in job_ids if not is_terminal(states.get(j))]
        summary = asyncio.run(EventLogReader(session.settings).summary(since_ms=started_ms))
        print()
        print_summary(summary)
        out_dir = run_dir / "published"
        written = download_published(session.settings, out_dir)
        print(f"assets written: {written} files (derivatives and lineage) under {publish_prefix} in MinIO")
        print(f"look at the published images in: {out_dir}")
        hint = (
            ""
            if keep_running
            else " (needs the event log: `lightbox run eventlog`, or rerun with --keep-running)"
        )
        print(f"one job's trail: lightbox status {job_ids[0]}{hint}")
        if unfinished:
            print(
                f"warning: {len(unfinished)} job(s) did not finish within {timeout_s:.0f}s; "
                f"stage logs: {session.log_dir}"
            )
            return 1
        return 0 if summary["published"] else 1
    finally:
        if not keep_running:
            session.stop()
            print("stages stopped; Kafka and MinIO keep running (`lightbox stack down` stops them)")
        server.close()
