"""End to end on the real pipeline (every stage a process, Kafka, MinIO, ClickHouse): product
references that show no product are refused in the references stage. Nothing of them is
generated or published, and each job's failure is in the event log with its own reason; an
optional one beside a good product is dropped and recorded, and that job is published."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from deploy.local.session import StaticServer, expected_job_ids
from processors.eventlog.reader import EventLogReader
from processors.storage import ObjectStore
from tests.support.catalog import events_for

pytestmark = pytest.mark.integration


def _write_not_visible(directory: Path) -> dict[str, str]:
    """file name -> the `why` the references stage must give. Fresh pixels per run (a seed from
    uuid4): content-addressed masks and their measures from earlier runs must not answer."""
    rng = np.random.default_rng(uuid.uuid4().int & 0xFFFFFFFF)
    hidden = rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)
    Image.fromarray(np.dstack([hidden, np.zeros((256, 256), np.uint8)]), "RGBA").save(
        directory / "transparent.png"
    )
    colour = tuple(int(c) for c in rng.integers(0, 255, 3))
    Image.new("RGB", (400, 300), colour).save(directory / "uniform.jpg", quality=90)  # type: ignore[arg-type]
    Image.new("RGBA", (300, 300), (*colour, 255)).save(directory / "uniform-opaque.png")  # type: ignore[arg-type]
    speck = Image.new("RGB", (1000, 1000), (255, 255, 255))
    x, y = (int(v) for v in rng.integers(100, 900, 2))
    ImageDraw.Draw(speck).rectangle((x, y, x + 1, y + 1), fill=(0, 0, 0))
    speck.save(directory / "speck.png")
    tiny = Image.new("RGBA", (512, 512), (0, 0, 0, 0))
    ImageDraw.Draw(tiny).rectangle((x // 2, y // 2, x // 2 + 15, y // 2 + 15), fill=(*colour, 255))  # type: ignore[arg-type]
    tiny.save(directory / "tiny-cutout.png")
    return {
        "transparent.png": "transparent",
        "uniform.jpg": "uniform",
        "uniform-opaque.png": "uniform",
        "speck.png": "no_content",
        "tiny-cutout.png": "low_coverage",
    }


@pytest.fixture(scope="module")
def hollow_images(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    directory = tmp_path_factory.mktemp("hollow")
    expected = _write_not_visible(directory)
    server = StaticServer(directory)
    server.expected = expected  # type: ignore[attr-defined]
    yield server
    server.close()


def test_products_that_are_not_visible_fail_their_jobs_and_nothing_of_them_is_published(
    pipeline, catalog_server, hollow_images
) -> None:
    names = sorted(hollow_images.expected)
    events = events_for(catalog_server, list(range(len(names))), f"hollow-{uuid.uuid4().hex[:6]}")
    for event, name in zip(events, names, strict=True):
        event["references"][0]["url"] = f"{hollow_images.url}/{name}"
    job_ids = expected_job_ids(events)
    pipeline.submit(events)

    states = pipeline.wait_for(job_ids, timeout_s=150)
    assert states == {job_id: "failed" for job_id in job_ids}, states

    reader = EventLogReader(pipeline.settings)
    store = ObjectStore(pipeline.settings.storage)
    publish_prefix = pipeline.settings.review.publish_prefix.rstrip("/")
    for event, name, job_id in zip(events, names, job_ids, strict=True):
        trail = asyncio.run(reader.timeline(job_id))["events"]
        failed = [e for e in trail if e["state"] == "failed"]
        assert [e["stage"] for e in failed] == ["references"], json.dumps(trail, default=str)[:2000]
        assert failed[0]["reason"] == "product_not_visible"
        assert failed[0]["attributes"]["why"] == hollow_images.expected[name], (name, failed[0])
        assert "coverage" in failed[0]["detail"]
        drop = next(e for e in trail if e["state"] == "dropped_reference")
        assert drop["reason"] == "product_not_visible" and drop["attributes"]["url"].endswith(name)
        assert not any(e["stage"] in ("prompt", "generate", "quality", "publish") for e in trail)
        assert not list(store.list_keys(f"generated/{job_id}/"))
        assert not list(store.list_keys(f"{publish_prefix}/{event['product']['sku']}/"))


def test_an_optional_product_that_is_not_visible_is_dropped_and_the_job_published(
    pipeline, catalog_server, hollow_images
) -> None:
    (event,) = events_for(catalog_server, [2], f"hollow-optional-{uuid.uuid4().hex[:6]}")
    event["references"].append(
        {"url": f"{hollow_images.url}/uniform.jpg", "role": "PRODUCT", "required": False}
    )
    (job_id,) = expected_job_ids([event])
    pipeline.submit([event])

    assert pipeline.wait_for([job_id], timeout_s=150).get(job_id) == "published"
    trail = asyncio.run(EventLogReader(pipeline.settings).timeline(job_id))["events"]
    (drop,) = [e for e in trail if e["state"] == "dropped_reference"]
    assert (drop["reason"], drop["attributes"]["why"], drop["attributes"]["required"]) == (
        "product_not_visible",
        "uniform",
        "False",
    )
    store = ObjectStore(pipeline.settings.storage)
    prefix = pipeline.settings.review.publish_prefix.rstrip("/")
    lineage = json.loads(store.get_bytes(f"{prefix}/{event['product']['sku']}/{job_id}/lineage.json"))
    assert [d["reason"] for d in lineage["dropped_references"]] == ["product_not_visible"]
    assert [r["role"] for r in lineage["references"]] == ["PRODUCT"]
