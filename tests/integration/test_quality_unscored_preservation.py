"""The quality gate never passes a job whose product preservation could not be scored: the stage
runs against real MinIO, reading a generated image and the stored product reference."""

from __future__ import annotations

import asyncio
import copy
import io
import uuid
from typing import Any

import numpy as np
import pytest
from PIL import Image

from processors.config import Settings
from processors.runtime import InputRecord, StageContext
from processors.stages.quality import QualityStage
from processors.storage import ObjectStore
from schemas.topics import Topic
from tests.fixtures.avro_samples import JOB_V1

pytestmark = pytest.mark.integration


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def _scored_job(store: ObjectStore, *, product: bool, mask: bool, attempt: int = 0) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:10]
    rng = np.random.default_rng(7)
    generated = Image.fromarray(rng.integers(0, 255, (512, 512, 3), dtype=np.uint8))
    output_key = f"tests/quality/{tag}/out.png"
    store.put_bytes(output_key, _png(generated), "image/png")
    job = copy.deepcopy(JOB_V1)
    job["job_id"] = f"quality-{tag}"
    job["attempt"] = attempt
    job["route"] = {"rule_id": "test", "backend": "compositor", "model": "none", "params": {"steps": "20"}}
    job["prompt"] = {"positive": "a mug", "negative": ""}
    job["generation"] = {"output_keys": [output_key]}
    (ref,) = job["references"]
    ref["key"] = f"tests/quality/{tag}/product.png"
    store.put_bytes(ref["key"], _png(generated.crop((0, 0, 128, 128))), "image/png")
    if mask:
        ref["mask_key"] = f"tests/quality/{tag}/mask.png"
        store.put_bytes(ref["mask_key"], _png(Image.new("L", (128, 128), 255)), "image/png")
    else:
        ref["mask_key"] = None
    if not product:
        ref["role"] = "MOODBOARD"
    return job


def _record(job: dict[str, Any]) -> InputRecord:
    return InputRecord(Topic.GENERATION_RESULTS, 0, 0, job["job_id"].encode(), job, b"", [], 0)


@pytest.fixture
async def stage(stack_settings: Settings) -> QualityStage:
    quality = QualityStage(StageContext(stack_settings, "quality"))
    await quality.start()
    return quality


@pytest.mark.parametrize(("product", "mask"), [(True, False), (False, False), (False, True)])
async def test_unscored_preservation_is_a_failing_reason(
    stage: QualityStage, product: bool, mask: bool
) -> None:
    job = await asyncio.to_thread(_scored_job, stage.ctx.store, product=product, mask=mask)
    outcome = await stage.handle(_record(job))
    (event,) = outcome.events
    assert event.state == "retry"
    assert event.reason == "preservation_unscored"
    assert "preservation" not in job["quality"]["scores"]
    assert job["quality"]["passed"] is False
    (output,) = outcome.outputs
    assert output.topic is Topic.GENERATION_REQUESTS


async def test_unscored_preservation_goes_to_review_when_exhausted(stage: QualityStage) -> None:
    attempt = stage.ctx.settings.quality.max_attempts - 1
    job = await asyncio.to_thread(_scored_job, stage.ctx.store, product=True, mask=False, attempt=attempt)
    outcome = await stage.handle(_record(job))
    (event,) = outcome.events
    assert event.attributes.get("needs_review") == "true"
    assert outcome.outputs[0].value["quality"]["reasons"] == ["preservation_unscored"]


async def test_scored_preservation_has_no_unscored_reason(stage: QualityStage) -> None:
    job = await asyncio.to_thread(_scored_job, stage.ctx.store, product=True, mask=True)
    await stage.handle(_record(job))
    assert "preservation" in job["quality"]["scores"]
    assert "preservation_unscored" not in job["quality"]["reasons"]
