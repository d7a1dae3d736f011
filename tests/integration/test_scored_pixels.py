"""Redone work never changes scored pixels: a generate batch redone after quality scored its
result (a kill before the commit, a rebalance), here on another backend after failover, writes
its image beside the scored one; the scored image stays as it was, the scored job names it, and
postprocess renders it. Real MinIO, the shipped stages, a remote inference API on 127.0.0.1."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import io
import time
from typing import Any

import pytest
from PIL import Image

from gpu_workers.worker import GenerateStage
from processors.config import Settings
from processors.runtime import InputRecord, Outcome, StageContext
from processors.runtime.codec import Codec
from processors.stages.quality import QualityStage
from processors.storage import ObjectStore
from processors.storage_keys import generated_digest
from schemas.topics import Topic
from tests.integration.test_generate_duplicates import generation_request, stored_product
from tests.ml.remote_api import InferenceAPI

pytestmark = pytest.mark.integration


def _record(codec: Codec, topic: Topic, job: dict[str, Any], offset: int = 0) -> InputRecord:
    value = copy.deepcopy(job)
    raw = codec.serde(topic).encode(value)  # the bytes the topic carries: registry-framed
    return InputRecord(topic, 0, offset, job["job_id"].encode(), value, raw, [], int(time.time() * 1000))


async def _generate(stage: GenerateStage, codec: Codec, request: dict[str, Any]) -> dict[str, Any]:
    (outcome,) = await stage.handle_batch([_record(codec, Topic.GENERATION_REQUESTS, request, offset=7)])
    await asyncio.gather(*outcome.effects)  # the uploads, as the runtime waits for them
    assert outcome.dead_letter is None
    (output,) = outcome.outputs
    return output.value


def _only_output(outcome: Outcome, topic: Topic) -> dict[str, Any]:
    (output,) = outcome.outputs
    assert output.topic is topic
    return output.value


async def test_a_redone_batch_on_another_backend_leaves_the_scored_image_alone(
    stack_settings: Settings,
) -> None:
    api = await InferenceAPI().start()
    settings = stack_settings.model_copy(
        update={
            "generation": stack_settings.generation.model_copy(update={"remote_endpoint": api.endpoint}),
            # One attempt, then review: whatever the scores, the scored job goes on to postprocess.
            "quality": stack_settings.quality.model_copy(
                update={"max_attempts": 1, "on_exhausted": "review"}
            ),
        }
    )
    store = ObjectStore(settings.storage)
    codec = Codec.of(settings)
    generate = GenerateStage(StageContext(settings, "generate"))
    quality = QualityStage(StageContext(settings, "quality"))
    await generate.start()
    await quality.start()
    try:
        ref = await asyncio.to_thread(stored_product, store)
        request = generation_request(ref, "a lamp", backend="remote", fallbacks=["compositor:compositor"])

        first = await _generate(generate, codec, request)
        assert first["generation"]["backend"] == "remote"
        (scored_key,) = first["generation"]["output_keys"]
        scored_bytes = await asyncio.to_thread(store.get_bytes, scored_key)
        assert generated_digest(scored_key) == hashlib.sha256(scored_bytes).hexdigest()

        scored = _only_output(
            await quality.handle(_record(codec, Topic.GENERATION_RESULTS, first)), Topic.ASSETS_SCORED
        )
        assert scored["asset_key"] == scored_key, "the scored job names the image that was scored"

        # The same batch again (its offsets were never committed), and the remote API is down
        # now: the request fails over to the compositor, which draws other pixels.
        await api.stop()
        redone = await _generate(generate, codec, request)
        assert redone["generation"]["backend"] == "compositor"
        assert redone["generation"]["fell_back_from"] == "remote"
        (redone_key,) = redone["generation"]["output_keys"]
        assert redone_key != scored_key
        redone_bytes = await asyncio.to_thread(store.get_bytes, redone_key)
        assert redone_bytes != scored_bytes

        # Both images are kept, and the scored one is byte for byte what quality scored.
        assert await asyncio.to_thread(store.get_bytes, scored_key) == scored_bytes
        # The redone result reaches quality too (another offset): the attempt was judged, so
        # the other pixels are neither scored nor sent on to be rendered.
        again = await quality.handle(_record(codec, Topic.GENERATION_RESULTS, redone, offset=1))
        assert [(e.state, e.reason) for e in again.events] == [("duplicate_job", "already_scored")]
        assert not again.outputs

        # Postprocess renders the scored image, not the redone one: the remote API's flat colour.
        from processors.stages.postprocess import PostprocessStage

        postprocess = PostprocessStage(StageContext(settings, "postprocess"))
        await postprocess.start()
        ready = _only_output(
            await postprocess.handle(_record(codec, Topic.ASSETS_SCORED, scored)), Topic.ASSETS_READY
        )
        derivative = ready["derivatives"][0]
        data = await asyncio.to_thread(store.get_bytes, derivative["key"])
        with Image.open(io.BytesIO(data)) as image:
            centre = image.convert("RGB").getpixel((image.width // 2, image.height // 2))
        expected = Image.open(io.BytesIO(scored_bytes)).convert("RGB").getpixel((24, 24))
        assert all(abs(a - b) <= 12 for a, b in zip(centre, expected, strict=True)), (centre, expected)
    finally:
        await generate.stop()
        await quality.stop()
        await api.stop()
