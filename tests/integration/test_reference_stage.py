"""The references stage against real MinIO and a real HTTP server on 127.0.0.1: a product
reference that shows no product is refused with its own reason (a required one fails the job, an
optional one is dropped and recorded), and many references on one slow origin all arrive."""

from __future__ import annotations

import asyncio
import copy
import io
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from aiohttp import web
from PIL import Image, ImageDraw

from processors import storage_keys
from processors.config import Settings
from processors.references.visibility import ProductMeasures
from processors.runtime import InputRecord, Outcome, StageContext
from processors.stages.references import ReferencesStage
from schemas.topics import Topic
from tests.fixtures.avro_samples import JOB_V1

pytestmark = pytest.mark.integration


def _encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def _unique(seed: int) -> np.random.Generator:
    # Fresh bytes per run, so no mask (and no measures) stored by an earlier run answers for them.
    return np.random.default_rng([seed, uuid.uuid4().int & 0xFFFFFFFF])


def packshot(seed: int = 0) -> bytes:
    rng = _unique(seed)
    photo = Image.new("RGB", (320, 320), (250, 250, 248))
    draw = ImageDraw.Draw(photo)
    colour = tuple(int(c) for c in rng.integers(20, 200, 3))
    draw.rounded_rectangle((80, 60, 240, 260), radius=14, fill=colour)  # type: ignore[arg-type]
    draw.rectangle((80, 140, 240, 160), fill=(240, 236, 220))
    return _encode(photo, "JPEG")


def transparent() -> bytes:
    rng = _unique(1)
    pixels = np.dstack([rng.integers(0, 255, (200, 200, 3), dtype=np.uint8), np.zeros((200, 200), np.uint8)])
    return _encode(Image.fromarray(pixels, "RGBA"), "PNG")


def uniform() -> bytes:
    rng = _unique(2)
    return _encode(Image.new("RGB", (300, 300), tuple(int(c) for c in rng.integers(0, 255, 3))), "JPEG")


def speck() -> bytes:
    # Smaller than the segmentation's cleanup keeps at this size: the mask finds nothing.
    image = Image.new("RGB", (1000, 1000), (255, 255, 255))
    x, y = (int(v) for v in _unique(3).integers(100, 900, 2))
    ImageDraw.Draw(image).rectangle((x, y, x + 1, y + 1), fill=(0, 0, 0))
    return _encode(image, "PNG")


def tiny_cutout() -> bytes:
    image = Image.new("RGBA", (512, 512), (0, 0, 0, 0))
    x, y = (int(v) for v in _unique(4).integers(50, 450, 2))
    ImageDraw.Draw(image).rectangle((x, y, x + 15, y + 15), fill=(200, 60, 60, 255))
    return _encode(image, "PNG")


NOT_VISIBLE: dict[str, tuple[Callable[[], bytes], str]] = {
    "transparent.png": (transparent, "transparent"),
    "uniform.jpg": (uniform, "uniform"),
    "speck.png": (speck, "no_content"),
    "tiny-cutout.png": (tiny_cutout, "low_coverage"),
}


@dataclass
class Origin:
    port: int = 0
    files: dict[str, bytes] = field(default_factory=dict)
    hits: Counter[str] = field(default_factory=Counter)
    in_flight: int = 0
    max_in_flight: int = 0
    delay_s: float = 0.0

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"


@pytest.fixture
async def origin() -> AsyncIterator[Origin]:
    state = Origin()

    async def serve(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        state.hits[name] += 1
        state.in_flight += 1
        state.max_in_flight = max(state.max_in_flight, state.in_flight)
        try:
            await asyncio.sleep(state.delay_s)
        finally:
            state.in_flight -= 1
        if name not in state.files:
            return web.Response(status=404)
        return web.Response(body=state.files[name], content_type="application/octet-stream")

    app = web.Application()
    app.router.add_get("/{name}", serve)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.port = runner.addresses[0][1]
    try:
        yield state
    finally:
        await runner.cleanup()


def _settings(base: Settings, **references: Any) -> Settings:
    refs = base.references.model_copy(
        update={
            "allow_hosts": ["127.0.0.1"],
            "retry_window_s": 0.5,
            "backoff_initial_s": 0.05,
            "backoff_max_s": 0.1,
            **references,
        }
    )
    return base.model_copy(update={"references": refs})


async def _stage(settings: Settings) -> ReferencesStage:
    stage = ReferencesStage(StageContext(settings, "references"))
    await stage.start()
    return stage


@pytest.fixture
async def stage(stack_settings: Settings) -> AsyncIterator[ReferencesStage]:
    references = await _stage(_settings(stack_settings))
    try:
        yield references
    finally:
        await references.stop()


def _job(refs: list[tuple[str, str, bool]]) -> dict[str, Any]:
    job = copy.deepcopy(JOB_V1)
    job["job_id"] = f"refs-{uuid.uuid4().hex[:10]}"
    job["references"] = []
    job["source_references"] = [
        {"url": url, "role": role, "required": required} for url, role, required in refs
    ]
    return job


async def _handle(stage: ReferencesStage, job: dict[str, Any]) -> Outcome:
    record = InputRecord(Topic.JOBS_ACCEPTED, 0, 0, job["job_id"].encode(), job, b"", [], 0)
    return await stage.handle(record)


def _events(outcome: Outcome, state: str) -> list[Any]:
    return [e for e in outcome.events if e.state == state]


@pytest.mark.parametrize("name", sorted(NOT_VISIBLE))
async def test_a_required_product_that_shows_no_product_fails_the_job_with_its_reason(
    stage: ReferencesStage, origin: Origin, name: str
) -> None:
    make, why = NOT_VISIBLE[name]
    origin.files[name] = make()
    outcome = await _handle(stage, _job([(origin.url(name), "PRODUCT", True)]))

    assert outcome.outputs == [], "nothing goes downstream"
    (failed,) = _events(outcome, "failed")
    assert failed.reason == "product_not_visible"
    assert failed.attributes["why"] == why
    assert "coverage" in failed.detail and float(failed.attributes["coverage"]) < 0.01
    (drop,) = _events(outcome, "dropped_reference")
    assert (drop.reason, drop.attributes["why"], drop.attributes["required"]) == (
        "product_not_visible",
        why,
        "True",
    )


async def test_an_optional_product_that_shows_no_product_is_dropped_and_recorded(
    stage: ReferencesStage, origin: Origin
) -> None:
    origin.files["good.jpg"] = packshot()
    origin.files["uniform.jpg"] = uniform()
    job = _job([(origin.url("good.jpg"), "PRODUCT", True), (origin.url("uniform.jpg"), "PRODUCT", False)])
    outcome = await _handle(stage, job)

    (output,) = outcome.outputs
    assert output.topic is Topic.JOBS_REFERENCED
    forwarded = output.value
    assert [r["role"] for r in forwarded["references"]] == ["PRODUCT"]
    assert forwarded["references"][0]["mask_key"]
    (dropped,) = forwarded["dropped_references"]
    assert (dropped["reason"], dropped["required"]) == ("product_not_visible", False)
    assert "coverage" in dropped["detail"]
    (drop,) = _events(outcome, "dropped_reference")
    assert drop.attributes["why"] == "uniform" and drop.attributes["url"].endswith("/uniform.jpg")
    assert not _events(outcome, "failed")


async def test_an_only_product_that_is_optional_and_not_visible_still_fails_the_job(
    stage: ReferencesStage, origin: Origin
) -> None:
    origin.files["transparent.png"] = transparent()
    outcome = await _handle(stage, _job([(origin.url("transparent.png"), "PRODUCT", False)]))
    assert outcome.outputs == []
    (failed,) = _events(outcome, "failed")
    assert failed.reason == "product_not_visible" and failed.attributes["why"] == "transparent"


async def test_a_uniform_moodboard_is_not_judged_as_a_product(stage: ReferencesStage, origin: Origin) -> None:
    origin.files["good.jpg"] = packshot()
    origin.files["mood.jpg"] = uniform()
    job = _job([(origin.url("good.jpg"), "PRODUCT", True), (origin.url("mood.jpg"), "MOODBOARD", False)])
    outcome = await _handle(stage, job)
    (output,) = outcome.outputs
    assert [r["role"] for r in output.value["references"]] == ["PRODUCT", "MOODBOARD"]
    assert output.value["dropped_references"] == []


async def test_measures_are_stored_with_the_mask_and_judged_with_the_current_settings(
    stack_settings: Settings, stage: ReferencesStage, origin: Origin
) -> None:
    origin.files["good.jpg"] = packshot()
    first = await _handle(stage, _job([(origin.url("good.jpg"), "PRODUCT", True)]))
    (output,) = first.outputs
    ref = output.value["references"][0]
    assert ref["mask_key"] == storage_keys.mask_key(ref["sha256"])
    measures = ProductMeasures.from_metadata(stage.ctx.store.metadata(ref["mask_key"]))
    assert measures is not None and 0.2 < measures.coverage < 0.6
    with Image.open(io.BytesIO(stage.ctx.store.get_bytes(ref["mask_key"]))) as mask:
        assert mask.size == (320, 320) and mask.mode == "L"

    # A stricter minimum, and the same image from the URL cache: judged from the stored measures.
    strict = await _stage(_settings(stack_settings, min_product_coverage=0.9))
    try:
        second = await _handle(strict, _job([(origin.url("good.jpg"), "PRODUCT", True)]))
    finally:
        await strict.stop()
    assert origin.hits["good.jpg"] == 1, "answered from storage, no download"
    (failed,) = _events(second, "failed")
    assert failed.reason == "product_not_visible" and failed.attributes["why"] == "low_coverage"


async def test_twenty_references_on_one_slow_origin_all_arrive(
    stack_settings: Settings, origin: Origin
) -> None:
    """Per-host limit 2, 0.3 s a response, a 1 s deadline and no retry window: the queue for the
    host's two connections is off the clock, so every reference is stored, none times out."""
    settings = _settings(stack_settings, per_host_concurrency=2, total_timeout_s=1.0, retry_window_s=0.0)
    stage = await _stage(settings)
    origin.delay_s = 0.3
    names = [f"ref-{n}.jpg" for n in range(20)]
    for n, name in enumerate(names):
        origin.files[name] = packshot(seed=100 + n)
    refs = [(origin.url(names[0]), "PRODUCT", True)] + [(origin.url(n), "MOODBOARD", True) for n in names[1:]]
    started = time.monotonic()
    try:
        outcome = await _handle(stage, _job(refs))
    finally:
        await stage.stop()
    assert not _events(outcome, "failed"), [e.detail for e in outcome.events]
    (output,) = outcome.outputs
    assert len(output.value["references"]) == 20
    assert origin.max_in_flight == 2
    assert time.monotonic() - started >= 20 / 2 * 0.3 * 0.9


async def test_the_stage_refuses_a_retry_window_longer_than_a_batch_may_take(
    stack_settings: Settings,
) -> None:
    stage = ReferencesStage(StageContext(_settings(stack_settings, retry_window_s=290.0), "references"))
    with pytest.raises(ValueError, match=r"max\.poll\.interval"):
        await stage.start()
