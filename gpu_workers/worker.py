"""generate: generation.requests → generation.results, batched.

Consumes a batch, expands best-of-N variants, groups compatible requests (same backend choices and
batch key: model, size, steps, sampler) into one backend call each, fails over between backends by
the routing decision, bisects a failing batch so one bad request costs only itself, and uploads the
images of one group while the next group generates. Every result records model and version, seed,
sampler, steps, guidance, size, backend, batch size, queue wait and compute time.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import time
from dataclasses import dataclass
from typing import Any, ClassVar

from PIL import Image

from gpu_workers.backends.base import (
    DEFAULT_SCENE,
    Backend,
    BackendUnavailable,
    GeneratedImage,
    GenerationItem,
    GenerationParams,
)
from gpu_workers.backends.compositor import CompositorBackend
from gpu_workers.batching import expand_best_of_n, group_compatible, run_with_split
from gpu_workers.failover import Choice, FailoverGenerator, FailoverOutcome
from processors.imaging import formats
from processors.references.images import ReferenceImages, product_reference
from processors.runtime import BatchStage, InputRecord, Outcome, PermanentError
from processors.runtime.records import job_event
from processors.storage_keys import generated_key
from schemas.topics import Topic

DEFAULTS = {"steps": "25", "guidance": "7.5", "sampler": "euler"}


class ExternalUrlError(PermanentError):
    """A URL reached the generator: the persist-first rule was broken upstream."""


@dataclass
class Request:
    record: InputRecord
    job: dict[str, Any]
    choices: tuple[Choice, ...]
    items: list[GenerationItem]
    queue_wait_ms: float


def _free_accelerator_memory(exc: BaseException) -> None:
    """Before the halves of a failed batch are retried: an out-of-memory error leaves cached
    blocks behind that the smaller batches need."""
    if type(exc).__name__ == "OutOfMemoryError":
        import torch

        torch.cuda.empty_cache()


def assert_no_external_urls(job: dict[str, Any]) -> None:
    if job.get("source_references"):
        raise ExternalUrlError("job still carries source URLs; references must be persisted first")
    for ref in job.get("references", []):
        for key in ("key", "mask_key"):
            value = str(ref.get(key) or "")
            if "://" in value:
                raise ExternalUrlError(f"reference {key} is a URL ({value[:80]}), not a storage key")


def seed_for(job: dict[str, Any]) -> int:
    if seed := job["route"]["params"].get("seed"):
        return int(seed)
    digest = hashlib.sha256(f"{job['job_id']}|{job.get('attempt', 0)}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFF_FFFF


def parse_choices(route: dict[str, Any]) -> tuple[Choice, ...]:
    choices = [Choice(route["backend"], route["model"])]
    for fallback in route.get("fallbacks", []):
        backend, _, model = fallback.partition(":")
        choices.append(Choice(backend, model or backend))
    return tuple(dict.fromkeys(choices))


class GenerateStage(BatchStage):
    name: ClassVar[str] = "generate"
    inputs: ClassVar[tuple[Topic, ...]] = (Topic.GENERATION_REQUESTS,)
    outputs: ClassVar[tuple[Topic, ...]] = (Topic.GENERATION_RESULTS,)

    async def start(self) -> None:
        self.backends: dict[str, Backend] = {"compositor": CompositorBackend()}
        self.reference_images = ReferenceImages(self.ctx.store)
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
        outcomes: dict[int, Outcome] = {}
        requests: dict[int, Request] = {}
        for index, record in enumerate(records):
            try:
                requests[index] = await self._request(record)
            except ExternalUrlError as exc:
                outcomes[index] = Outcome.fail(record.value, "external_url_blocked", str(exc))
            except FileNotFoundError as exc:
                outcomes[index] = Outcome.fail(record.value, "missing_source_file", str(exc))
            except Exception as exc:
                # Anything else about this one request (a bad parameter from a rule, an image
                # that will not decode) is its own problem: dead-letter it, keep the batch going.
                event = job_event(record.value, "failed", reason="invalid_request", detail=str(exc)[:500])
                outcomes[index] = Outcome(events=[event], dead_letter=exc)

        owner = {item.request_id: i for i, req in requests.items() for item in req.items}
        pairs = [(req.choices, item) for req in requests.values() for item in req.items]
        groups = group_compatible(pairs, self._group_key, self.ctx.settings.generation.max_batch)

        generated: dict[str, tuple[GeneratedImage, FailoverOutcome, int]] = {}
        failed: dict[int, BaseException] = {}
        uploads: dict[int, list[asyncio.Task[None]]] = {}
        for group in groups:
            choices = group[0][0]
            items = [item for _, item in group]
            results, failures = await run_with_split(
                items, lambda batch, c=choices: self._generate(batch, c), on_error=_free_accelerator_memory
            )
            for image, outcome in results:
                generated[image.request_id] = (image, outcome, len(items))
                index = owner[image.request_id]
                # Uploads run while the next group (and, with prefetch, the next batch) generates;
                # the runtime waits for them before producing this job's result.
                uploads.setdefault(index, []).append(
                    asyncio.create_task(self._upload(requests[index].job, image))
                )
            for item, exc in failures:
                if isinstance(exc, BackendUnavailable):
                    raise exc  # every backend is down: retry the batch, commit nothing
                failed.setdefault(owner[item.request_id], exc)

        for index, request in requests.items():
            if index in failed:
                outcomes[index] = Outcome(
                    events=[
                        job_event(
                            request.job, "failed", reason="generation_error", detail=str(failed[index])[:500]
                        )
                    ],
                    dead_letter=failed[index],
                    effects=list(uploads.get(index, [])),
                )
                continue
            outcomes[index] = self._result(request, generated)
            outcomes[index].effects = list(uploads.get(index, []))
        return [outcomes[i] for i in range(len(records))]

    def _group_key(self, pair: tuple[tuple[Choice, ...], GenerationItem]) -> tuple[object, ...]:
        choices, item = pair
        backend = self.backends.get(choices[0].backend) or self.backends["compositor"]
        return (choices, backend.batch_key(item))

    async def _generate(
        self, items: list[GenerationItem], choices: tuple[Choice, ...]
    ) -> list[tuple[GeneratedImage, FailoverOutcome]]:
        outcome = await self.failover.generate(items, choices)
        return [(image, outcome) for image in outcome.results]

    async def _request(self, record: InputRecord) -> Request:
        job = record.value
        assert_no_external_urls(job)
        if not job.get("route") or not job.get("prompt"):
            raise PermanentError("generation request without prompt or route")
        product_ref = product_reference(job)
        if product_ref is None:
            raise FileNotFoundError("no stored product reference on the job")
        product, mask = await asyncio.to_thread(self._load_product, product_ref)
        params = {**DEFAULTS, **job["route"]["params"]}
        spec = job["spec"]
        base = GenerationItem(
            # The attempt is part of the id: a retry of a job may share a batch with its first try.
            request_id=f"{job['job_id']}@{job.get('attempt', 0)}",
            params=GenerationParams(
                model=job["route"]["model"],
                width=spec["width"],
                height=spec["height"],
                steps=int(params["steps"]),
                guidance=float(params["guidance"]),
                sampler=params["sampler"],
                seed=seed_for(job),
                prompt=job["prompt"]["positive"],
                negative_prompt=job["prompt"]["negative"],
                options=tuple(sorted((k, str(v)) for k, v in params.items())),
            ),
            product=product,
            mask=mask,
            scene=params.get("scene", DEFAULT_SCENE),
        )
        items = expand_best_of_n(base, max(1, int(spec.get("variants") or 1)))
        if len(items) == 1:
            items = [GenerationItem(**{**base.__dict__, "request_id": f"{base.request_id}#0"})]
        wait = max(0.0, time.time() * 1000 - record.timestamp_ms)
        return Request(record, job, parse_choices(job["route"]), items, wait)

    def _load_product(self, ref: dict[str, Any]) -> tuple[Image.Image, Image.Image | None]:
        return self.reference_images.product(ref), self.reference_images.mask(ref)

    async def _upload(self, job: dict[str, Any], image: GeneratedImage) -> None:
        def encode_and_put() -> None:
            buf = io.BytesIO()
            image.image.save(buf, format="PNG")
            self.ctx.store.put_bytes(
                generated_key(job, image.request_id),
                buf.getvalue(),
                formats.PNG,
                {"job-id": job["job_id"], "model-version": image.model_version},
            )

        await asyncio.to_thread(encode_and_put)

    def _result(
        self, request: Request, generated: dict[str, tuple[GeneratedImage, FailoverOutcome, int]]
    ) -> Outcome:
        job = request.job
        images = [generated[item.request_id] for item in request.items]
        first_image, outcome, batch_size = images[0]
        params = request.items[0].params
        job["generation"] = {
            "backend": outcome.served_by.backend,
            "model": outcome.served_by.model,
            "model_version": first_image.model_version,
            "seed": params.seed,
            "sampler": params.sampler,
            "steps": params.steps,
            "guidance": params.guidance,
            "width": params.width,
            "height": params.height,
            "output_keys": [generated_key(job, item.request_id) for item in request.items],
            "batch_size": batch_size,
            "queue_wait_ms": request.queue_wait_ms,
            "compute_ms": sum(image.compute_ms for image, _, _ in images),
            "fell_back_from": outcome.fell_back_from,
        }
        attributes = {
            "backend": outcome.served_by.backend,
            "model": outcome.served_by.model,
            "batch_size": str(batch_size),
            "variants": str(len(images)),
        }
        if outcome.fell_back_from:
            attributes["fell_back_from"] = outcome.fell_back_from
            attributes["skipped"] = "; ".join(f"{s.choice.backend}: {s.reason}" for s in outcome.skipped)[
                :500
            ]
        return Outcome.forward(Topic.GENERATION_RESULTS, job, "running", **attributes)
