"""The quality verdict: a failed variant is retried with a new seed while attempts are left,
except for a product missing from the reference (no attempt can add it), which goes straight to
what exhausted attempts lead to (review, or failure)."""

from __future__ import annotations

import copy
import hashlib
import io
from typing import Any
from unittest import mock

import pytest
from PIL import Image, ImageDraw

from processors.config import QualitySettings, Settings
from processors.imaging.ocr import OcrUnavailable
from processors.runtime import StageContext
from processors.runtime.memory import MemoryStore
from processors.stages.quality import QualityStage
from processors.storage_keys import generated_key
from schemas.topics import Topic
from tests.fixtures.avro_samples import JOB_V1


def _stage(on_exhausted: str = "review") -> QualityStage:
    settings = Settings(quality=QualitySettings(on_exhausted=on_exhausted))  # type: ignore[arg-type]
    return QualityStage(StageContext(settings, "quality"))


def _job() -> dict[str, Any]:
    job = copy.deepcopy(JOB_V1)
    job["attempt"] = 0
    job["route"] = {"rule_id": "t", "backend": "compositor", "model": "none", "params": {"steps": "20"}}
    job["generation"] = {"output_keys": ["generated/j/0/0/aa.png"]}
    return job


def test_a_weak_result_is_retried() -> None:
    outcome = _stage()._verdict(_job(), [({"preservation": 0.2, "overall": 0.2}, ["product_not_preserved"])])
    (event,) = outcome.events
    assert event.state == "retry"
    assert [o.topic for o in outcome.outputs] == [Topic.GENERATION_REQUESTS]


@pytest.mark.parametrize("on_exhausted", ["review", "fail"])
def test_a_product_missing_from_the_reference_is_never_retried(on_exhausted: str) -> None:
    scores = {"preservation": 0.0, "product_region": 0.0, "overall": 0.0}
    outcome = _stage(on_exhausted)._verdict(_job(), [(scores, ["product_missing"])])
    (event,) = outcome.events
    assert event.state != "retry"
    assert all(o.topic is not Topic.GENERATION_REQUESTS for o in outcome.outputs)
    if on_exhausted == "fail":
        assert event.state == "failed" and not outcome.outputs
    else:
        (output,) = outcome.outputs
        assert output.topic is Topic.ASSETS_SCORED
        assert event.attributes["needs_review"] == "true"


@pytest.mark.parametrize(("overlay", "ocr_required"), [("   ", False), ("", False), ("SALE", True)])
async def test_only_a_real_text_overlay_requires_an_ocr_score(overlay: str, ocr_required: bool) -> None:
    """A blank text_overlay is no text (intake.text_or_none): it must not ask for OCR, which
    would fail the job as ocr_unavailable wherever Tesseract is missing."""
    stage = _stage()
    store = MemoryStore()
    stage.ctx.__dict__["store"] = store  # StageContext.store is a cached_property
    await stage.start()
    image = Image.new("RGB", (64, 64), (120, 90, 60))
    ImageDraw.Draw(image).rectangle((10, 10, 50, 50), fill=(20, 200, 30))
    buf = io.BytesIO()
    image.save(buf, "PNG")
    data = buf.getvalue()
    key = generated_key("j", 0, 0, hashlib.sha256(data).hexdigest())
    store.put_bytes(key, data, "image/png")
    job = _job()
    job["spec"] = {**job["spec"], "width": 64, "height": 64, "text_overlay": overlay}
    with mock.patch("processors.stages.quality.text_match_score", side_effect=OcrUnavailable("none")):
        scores, reasons = stage._score(key, job, None, None)
    assert ("ocr_unavailable" in reasons) is ocr_required
    assert "ocr_score" not in scores
