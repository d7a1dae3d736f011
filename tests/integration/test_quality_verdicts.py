"""The quality stage's verdict is the one rule (processors/imaging/checks.failed_reasons) with the
thresholds from configuration: the shipped QualityStage against real MinIO, reading generated
images and stored product references.

These tests drive only the stage and public scoring functions, so they ran unchanged against the
code before the rule was folded: there the stage had its own copy of the verdict (a NaN score
passed, blank was `>` a 0.97 default while the helper said `>=` 0.85), and they failed.
"""

from __future__ import annotations

import asyncio
import copy
import io
import math
import uuid
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from gpu_workers.backends.compositor import composite
from processors.config import QualitySettings, Settings
from processors.imaging.checks import check_output, failed_reasons
from processors.runtime import InputRecord, StageContext
from processors.stages.quality import QualityStage
from processors.storage import ObjectStore
from schemas.topics import Topic
from tests.fixtures.avro_samples import JOB_V1

pytestmark = pytest.mark.integration

SIZE = 192


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def _product() -> Image.Image:
    """A cut-out with structure (its alpha is its mask)."""
    image = Image.new("RGBA", (96, 96), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.rounded_rectangle((14, 14, 72, 88), radius=8, fill=(200, 50, 40, 255))
    draw.rectangle((14, 44, 72, 52), fill=(240, 236, 220, 255))
    draw.ellipse((34, 60, 52, 78), fill=(20, 30, 60, 255))
    return image


def _faint_ramp() -> Image.Image:
    """Nearly flat: a blank score near 0.9, between the two defaults the copies disagreed on."""
    ramp = np.linspace(124.0, 132.0, SIZE)[:, None] * np.ones((1, SIZE))
    return Image.fromarray(np.repeat(ramp[..., None], 3, axis=2).round().astype(np.uint8))


def _job(store: ObjectStore, output: Image.Image) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:10]
    product = _product()
    job = copy.deepcopy(JOB_V1)
    job["job_id"] = f"verdict-{tag}"
    job["attempt"] = 0
    job["spec"] = {**job["spec"], "width": SIZE, "height": SIZE, "text_overlay": None}
    job["route"] = {"rule_id": "test", "backend": "compositor", "model": "none", "params": {"steps": "20"}}
    job["prompt"] = {"positive": "a mug", "negative": ""}
    output_key = f"tests/quality-verdicts/{tag}/out.png"
    store.put_bytes(output_key, _png(output), "image/png")
    job["generation"] = {"output_keys": [output_key]}
    (ref,) = job["references"]
    ref["key"] = f"tests/quality-verdicts/{tag}/product.png"
    ref["mask_key"] = f"tests/quality-verdicts/{tag}/mask.png"
    store.put_bytes(ref["key"], _png(product), "image/png")
    store.put_bytes(ref["mask_key"], _png(product.getchannel("A")), "image/png")
    return job


def _record(job: dict[str, Any]) -> InputRecord:
    return InputRecord(Topic.GENERATION_RESULTS, 0, 0, job["job_id"].encode(), job, b"", [], 0)


async def _stage(settings: Settings, quality: QualitySettings) -> QualityStage:
    stage = QualityStage(StageContext(settings.model_copy(update={"quality": quality}), "quality"))
    await stage.start()
    return stage


async def _verdict(stage: QualityStage, output: Image.Image) -> dict[str, Any]:
    job = await asyncio.to_thread(_job, stage.ctx.store, output)
    await stage.handle(_record(job))
    return job["quality"]


class _ConstantScorer:
    """Stands in for a CLIP model whose forward pass went numerically wrong (fp16 overflow)."""

    def __init__(self, value: float) -> None:
        self.value = value

    def score(self, image: Image.Image, text: str) -> float:
        return self.value


async def test_a_composite_of_the_product_passes(stack_settings: Settings) -> None:
    stage = await _stage(stack_settings, QualitySettings())
    quality = await _verdict(stage, composite(_product(), None, SIZE, SIZE, "studio", seed=3))
    assert quality["passed"] is True and quality["reasons"] == []


async def test_a_nan_score_fails_with_its_reason(stack_settings: Settings) -> None:
    stage = await _stage(stack_settings, QualitySettings())
    stage.clip = _ConstantScorer(math.nan)  # type: ignore[assignment]
    quality = await _verdict(stage, composite(_product(), None, SIZE, SIZE, "studio", seed=3))
    assert math.isnan(quality["scores"]["clip_score"])
    assert quality["passed"] is False
    assert quality["reasons"] == ["low_prompt_adherence"]


async def test_a_blank_score_at_the_configured_limit_fails(stack_settings: Settings) -> None:
    output = _faint_ramp()
    blank = check_output(output, SIZE, SIZE)["blank_score"]
    assert 0.85 < blank < 0.97
    at_limit = await _stage(stack_settings, QualitySettings(max_blank_score=blank))
    assert "blank_output" in (await _verdict(at_limit, output))["reasons"]
    above = await _stage(stack_settings, QualitySettings(max_blank_score=math.nextafter(blank, 1.0)))
    assert "blank_output" not in (await _verdict(above, output))["reasons"]


@pytest.mark.parametrize("kind", ["faint_ramp", "composite", "noise"])
async def test_the_stage_verdict_is_the_one_rule_with_the_configured_defaults(
    stack_settings: Settings, kind: str
) -> None:
    outputs = {
        "faint_ramp": _faint_ramp,
        "composite": lambda: composite(_product(), None, SIZE, SIZE, "kitchen", seed=5),
        "noise": lambda: Image.fromarray(
            np.random.default_rng(2).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
        ),
    }
    stage = await _stage(stack_settings, QualitySettings())
    quality = await _verdict(stage, outputs[kind]())
    assert "preservation" in quality["scores"]
    assert quality["reasons"] == failed_reasons(quality["scores"])
