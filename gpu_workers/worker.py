"""generate: generation.requests → generation.results, batched.

Consumes a batch, expands best-of-N variants, groups compatible requests (same backend choices and
batch key: model, size, steps, sampler) into one backend call each, fails over between backends by
the routing decision, bisects a failing batch so one bad request costs only itself, and uploads the
images of one group while the next group generates. Every result records model and version, seed,
sampler, steps, guidance, size, backend, batch size, queue wait and compute time.

At least once means copies: two copies of one request in a batch are generated once and each
copy gets its own answer (a result, or a dead letter when the request fails). Images are stored
under their content's sha256 (processors/storage_keys.generated_key), so a redone batch never
changes an image already scored. Failures are classed by the one rule (processors.storage for
storage, the runtime's classes otherwise): a request's own fault fails that request with its
reason and dead-letters it; an outage (storage, every backend of a route) retries the whole
batch, with a `retry` event for every job in it (gpu_workers/batch_retry.py).
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from PIL import Image

from gpu_workers.backends.base import Backend, BackendUnavailable, GeneratedImage, GenerationItem
from gpu_workers.backends.compositor import CompositorBackend
from gpu_workers.batch_retry import BatchRetries, BatchUnavailable
from gpu_workers.batching import group_compatible, run_with_split
from gpu_workers.failover import Choice, FailoverGenerator, FailoverOutcome
from gpu_workers.outputs import EncodedImage, OutputWriter, encode_png
from gpu_workers.request import (
    ExternalUrlError,
    GenerationRequest,
    build,
    check,
    identity,
    with_product,
)
from gpu_workers.usage import USAGE_KEYS, usage_attributes
from processors.imaging import formats
from processors.references.images import ReferenceImages
from processors.runtime import BatchStage, InputRecord, Outcome, TransientError
from processors.runtime.records import job_event
from processors.storage import classify_storage_error
from processors.storage_keys import generated_key
from schemas.topics import Topic

# (choices, the slot of the request's leader, one of its items): what is grouped and generated.
Pair = tuple[tuple[Choice, ...], int, GenerationItem]


@dataclass
class Generated:
    image: GeneratedImage
    served: FailoverOutcome
    batch_size: int
    encoding: asyncio.Task[EncodedImage]


def _free_accelerator_memory(exc: BaseException) -> None:
    """Before the halves of a failed batch are retried: an out-of-memory error leaves cached
    blocks behind that the smaller batches need."""
    if type(exc).__name__ == "OutOfMemoryError":
        import torch

        torch.cuda.empty_cache()


def _reason_of(exc: BaseException) -> str:
    reason = getattr(exc, "reason", "")
    if isinstance(reason, str) and reason:
        return reason
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(exc).__name__).lower()


class GenerateStage(BatchStage):
    name: ClassVar[str] = "generate"
    inputs: ClassVar[tuple[Topic, ...]] = (Topic.GENERATION_REQUESTS,)
    outputs: ClassVar[tuple[Topic, ...]] = (Topic.GENERATION_RESULTS,)

    def batch_limit(self) -> int:
        # A batch from Kafka is one generation batch's worth of records: with the stages' 32, a
        # burst's first results waited for 32 generations (1.8 s of compositing before quality saw
        # anything; docs/benchmarks.md). The fetched-ahead batches (generation.queue_batches) keep
        # the backend busy meanwhile; share mode polls this many already (max.poll.records).
        return self.ctx.settings.generation.max_batch

    def consumption(self) -> Literal["group", "share"]:
        # Any number of workers may share generation.requests as a share group (KIP-932).
        return self.ctx.settings.generation.consumption

    async def start(self) -> None:
        formats.load_codecs()
        self.backends: dict[str, Backend] = {"compositor": CompositorBackend()}
        self.reference_images = ReferenceImages(
            self.ctx.store, max_bytes=self.ctx.settings.references.decoded_cache_bytes
        )
        self.writer = OutputWriter(self.ctx.store, self.ctx.settings.stage)
        self.retries = BatchRetries()
        settings = self.ctx.settings.generation
        self.prefetch_batches = settings.queue_batches
        if settings.models_file:
            from gpu_workers.backends.diffusers_backend import DiffusersBackend
            from gpu_workers.registry import ModelRegistry

            registry = ModelRegistry.from_file(settings.models_file)
            registry.validate()  # a missing model path stops the worker here, naming the model
            self.backends["diffusers"] = DiffusersBackend(registry)
        if settings.remote_endpoint:
            from gpu_workers.backends.remote import RemoteBackend

            self.backends["remote"] = RemoteBackend(settings.remote_endpoint, settings.remote_api_key)
        self.failover = FailoverGenerator(self.backends)
        self.ctx.log.info("generation backends: %s", ", ".join(self.backends))

    async def stop(self) -> None:
        for backend in self.backends.values():
            close = getattr(backend, "close", None)
            if close is not None:
                result = close()
                if asyncio.iscoroutine(result):
                    await result

    async def handle_batch(self, records: list[InputRecord]) -> list[Outcome]:
        try:
            outcomes = await _BatchRun(self, records).run()
        except BackendUnavailable as exc:
            raise self._unavailable(records, "backends_unavailable", exc) from exc
        except TransientError as exc:
            raise self._unavailable(records, _reason_of(exc), exc) from exc
        for slot, events in self.retries.take(records).items():
            outcomes[slot].events[:0] = events
        return outcomes

    def _unavailable(self, records: list[InputRecord], reason: str, exc: BaseException) -> BatchUnavailable:
        detail = f"{type(exc).__name__}: {exc}"
        events = self.retries.failed(records, reason, detail)
        self.ctx.log.warning("whole batch of %d to be retried (%s): %s", len(records), reason, detail)
        return BatchUnavailable(f"batch of {len(records)} not generated ({reason}): {detail}", reason, events)

    def group_key(self, pair: Pair) -> tuple[object, ...]:
        choices, _, item = pair
        backend = self.backends.get(choices[0].backend) or self.backends["compositor"]
        return (choices, backend.batch_key(item))

    def load_product(self, ref: dict[str, Any]) -> tuple[Image.Image, Image.Image | None]:
        return self.reference_images.product(ref), self.reference_images.mask(ref)

    async def generate(
        self, items: list[GenerationItem], choices: tuple[Choice, ...]
    ) -> list[tuple[GenerationItem, GeneratedImage, FailoverOutcome]]:
        outcome = await self.failover.generate(items, choices)
        # Paired by position (the backend contract: one image per item, in order), so nothing
        # here depends on a backend echoing request ids back.
        return [(item, image, outcome) for item, image in zip(items, outcome.results, strict=True)]

    async def store_image(
        self, encoding: asyncio.Task[EncodedImage], job: dict[str, Any], variant: int, version: str
    ) -> None:
        try:
            encoded = await encoding
        except Exception:
            return  # the request fails with the encoding's error (see _BatchRun); nothing to store
        key = generated_key(job["job_id"], int(job.get("attempt") or 0), variant, encoded.sha256)
        await self.writer.upload(key, encoded, {"job-id": job["job_id"], "model-version": version})


class _BatchRun:
    """One handle_batch call: which records are copies of which, then read, generate, answer."""

    def __init__(self, stage: GenerateStage, records: list[InputRecord]) -> None:
        self.stage = stage
        self.records = records
        # The first copy of each distinct request leads; later copies follow it.
        self.leader: list[int] = []
        first: dict[str, int] = {}
        for slot, record in enumerate(records):
            self.leader.append(first.setdefault(identity(record), slot))
        self.requests: dict[int, GenerationRequest] = {}
        self.refused: dict[int, BaseException] = {}  # a leader's request could not be read
        self.failed: dict[int, BaseException] = {}  # a leader's request could not be generated
        self.generated: dict[str, Generated] = {}  # by item request id
        self.uploads: dict[int, list[asyncio.Task[None]]] = {}  # by leader slot
        self.started_ms = time.time() * 1000

    async def run(self) -> list[Outcome]:
        try:
            reads = await asyncio.gather(
                *(self._read(slot) for slot in sorted(set(self.leader))), return_exceptions=True
            )
            for failure in reads:
                if failure is not None:
                    raise failure  # storage is down for every request: retry the batch
            await self._generate_all()
            return [self._answer(slot, record) for slot, record in enumerate(self.records)]
        except BaseException:
            # The batch is retried whole: what it started must not outlive it.
            tasks = [t for ts in self.uploads.values() for t in ts]
            tasks += [g.encoding for g in self.generated.values()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    async def _read(self, slot: int) -> None:
        record = self.records[slot]
        try:
            ref = check(record.value)
            request = build(record, slot)
            product, mask = await asyncio.to_thread(self.stage.load_product, ref)
        except Exception as exc:
            classified = classify_storage_error(exc)
            if isinstance(classified, TransientError):
                raise classified from exc
            self.refused[slot] = classified or exc
            return
        with_product(request, product, mask)
        self.requests[slot] = request

    async def _generate_all(self) -> None:
        pairs: list[Pair] = [
            (request.choices, slot, item) for slot, request in self.requests.items() for item in request.items
        ]
        owner = {item.request_id: slot for _, slot, item in pairs}
        groups = group_compatible(pairs, self.stage.group_key, self.stage.ctx.settings.generation.max_batch)
        for group in groups:
            choices = group[0][0]
            items = [item for _, _, item in group]
            results, failures = await run_with_split(
                items,
                lambda batch, c=choices: self.stage.generate(batch, c),
                on_error=_free_accelerator_memory,
            )
            for item, image, served in results:
                # Encoding and upload run while the next group (and, with prefetch, the next
                # batch) generates; the runtime waits for the uploads before producing results.
                encoding = asyncio.create_task(asyncio.to_thread(encode_png, image.image))
                self.generated[item.request_id] = Generated(image, served, len(items), encoding)
                slot = owner[item.request_id]
                request = self.requests[slot]
                upload = self.stage.store_image(
                    encoding, request.job, request.variant_of(item), image.model_version
                )
                self.uploads.setdefault(slot, []).append(asyncio.create_task(upload))
            for item, exc in failures:
                if isinstance(exc, BackendUnavailable):
                    raise exc  # every backend of the route is down: retry the batch, commit nothing
                self.failed.setdefault(owner[item.request_id], exc)
        for slot, request in self.requests.items():
            for item in request.items:
                done = self.generated.get(item.request_id)
                if done is None:
                    continue
                try:
                    await done.encoding
                except Exception as exc:
                    self.failed.setdefault(slot, exc)

    def _answer(self, slot: int, record: InputRecord) -> Outcome:
        """The outcome of one record, from its leader's request: every copy gets its own."""
        leader = self.leader[slot]
        job = record.value
        if leader in self.refused:
            return _refusal(job, self.refused[leader])
        effects = list(self.uploads.get(leader, []))
        if leader in self.failed:
            exc = self.failed[leader]
            event = job_event(job, "failed", reason="generation_error", detail=str(exc)[:500])
            return Outcome(events=[event], dead_letter=exc, effects=effects)
        outcome = self._result(record, self.requests[leader])
        if leader != slot:
            source = self.records[leader]
            outcome.events[0].attributes["copy_of"] = f"{source.partition}/{source.offset}"
            # The leader's event carries the compute: a copy used none of its own.
            for key in USAGE_KEYS:
                outcome.events[0].attributes.pop(key, None)
        outcome.effects = effects
        return outcome

    def _result(self, record: InputRecord, request: GenerationRequest) -> Outcome:
        job = record.value
        images = [self.generated[item.request_id] for item in request.items]
        first = images[0]
        params = request.items[0].params
        served = first.served
        attempt = int(job.get("attempt") or 0)
        job["generation"] = {
            "backend": served.served_by.backend,
            "model": served.served_by.model,
            "model_version": first.image.model_version,
            "seed": params.seed,
            "sampler": params.sampler,
            "steps": params.steps,
            "guidance": params.guidance,
            "width": params.width,
            "height": params.height,
            "output_keys": [
                generated_key(job["job_id"], attempt, variant, done.encoding.result().sha256)
                for variant, done in enumerate(images)
            ],
            "batch_size": first.batch_size,
            "queue_wait_ms": max(0.0, self.started_ms - record.timestamp_ms),
            "compute_ms": sum(done.image.compute_ms for done in images),
            "fell_back_from": served.fell_back_from,
        }
        attributes = {
            "backend": served.served_by.backend,
            "model": served.served_by.model,
            "batch_size": str(first.batch_size),
            "variants": str(len(images)),
            **usage_attributes(served.served_by.backend, [done.image for done in images]),
        }
        if served.fell_back_from:
            attributes["fell_back_from"] = served.fell_back_from
            attributes["skipped"] = "; ".join(f"{s.choice.backend}: {s.reason}" for s in served.skipped)[:500]
        return Outcome.forward(Topic.GENERATION_RESULTS, job, "running", **attributes)


def _refusal(job: dict[str, Any], exc: BaseException) -> Outcome:
    """A request that could not be read fails with its reason and is dead-lettered (a missing
    product file can be restored and the letter replayed); one with a URL left in it is failed
    only: persist-first was broken upstream, and the job must come through references again."""
    if isinstance(exc, ExternalUrlError):
        return Outcome.fail(job, "external_url_blocked", str(exc))
    reason = getattr(exc, "reason", "") or "invalid_request"
    event = job_event(job, "failed", reason=reason, detail=str(exc)[:500])
    return Outcome(events=[event], dead_letter=exc)
