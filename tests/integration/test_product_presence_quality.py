"""The quality gate never passes a product that is not in the reference: the real quality stage,
against real MinIO, scoring outputs for stored references whose product region is empty (a
transparent cut-out or a one-colour frame under the full-frame mask an older references stage
stored for them). The output shows exactly what a compositor would paste for such a reference,
so a preservation measured over the empty region would be a perfect 1. Such a job is never
retried: another attempt cannot add a product the reference lacks."""

from __future__ import annotations

import asyncio
import copy
import io
import uuid
from typing import Any

import pytest
from PIL import Image, ImageDraw

from processors.config import Settings
from processors.runtime import InputRecord, StageContext
from processors.stages.quality import QualityStage
from processors.storage import ObjectStore
from schemas.topics import Topic
from tests.fixtures.avro_samples import JOB_V1

pytestmark = pytest.mark.integration

HIDDEN = (200, 30, 30)


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def _transparent_product() -> Image.Image:
    return Image.new("RGBA", (128, 128), (*HIDDEN, 0))


def _uniform_product() -> Image.Image:
    return Image.new("RGB", (128, 128), HIDDEN)


def _job(store: ObjectStore, product: Image.Image) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:10]
    output = Image.new("RGB", (512, 512), (235, 235, 230))
    ImageDraw.Draw(output).rectangle((150, 150, 362, 362), fill=HIDDEN)  # the pasted "product"
    output_key = f"tests/product-presence/{tag}/out.png"
    store.put_bytes(output_key, _png(output), "image/png")
    job = copy.deepcopy(JOB_V1)
    job["job_id"] = f"presence-{tag}"
    job["route"] = {"rule_id": "test", "backend": "compositor", "model": "none", "params": {"steps": "20"}}
    job["prompt"] = {"positive": "a product", "negative": ""}
    job["generation"] = {"output_keys": [output_key]}
    (ref,) = job["references"]
    ref["key"] = f"tests/product-presence/{tag}/product.png"
    ref["mask_key"] = f"tests/product-presence/{tag}/mask.png"
    store.put_bytes(ref["key"], _png(product), "image/png")
    store.put_bytes(ref["mask_key"], _png(Image.new("L", product.size, 255)), "image/png")
    return job


@pytest.fixture
async def stage(stack_settings: Settings) -> QualityStage:
    quality = QualityStage(StageContext(stack_settings, "quality"))
    await quality.start()
    return quality


@pytest.mark.parametrize("product", [_transparent_product, _uniform_product], ids=["transparent", "uniform"])
async def test_an_empty_product_region_scores_zero_and_never_passes(
    stage: QualityStage, product: Any
) -> None:
    job = await asyncio.to_thread(_job, stage.ctx.store, product())
    record = InputRecord(Topic.GENERATION_RESULTS, 0, 0, job["job_id"].encode(), job, b"", [], 0)
    outcome = await stage.handle(record)

    quality = job["quality"]
    assert quality["passed"] is False
    assert quality["scores"]["preservation"] == 0.0
    # The product_region score is recorded (checks.preservation_scores), so the reason is the
    # cause, product_missing, not a low preservation score.
    assert quality["scores"]["product_region"] == 0.0
    assert quality["reasons"][0] == "product_missing"
    # Never retried (no new seed can add a product the reference lacks): straight to review,
    # flagged, or failed, as configured; never scored as passed.
    (event,) = outcome.events
    assert all(output.topic is not Topic.GENERATION_REQUESTS for output in outcome.outputs)
    if stage.ctx.settings.quality.on_exhausted == "review":
        assert event.state == "completed" and event.attributes["needs_review"] == "true"
        assert [output.topic for output in outcome.outputs] == [Topic.ASSETS_SCORED]
    else:
        assert event.state == "failed" and event.reason == "quality_rejection"
        assert outcome.outputs == []
