from __future__ import annotations

import asyncio
import copy

import pytest

from gpu_workers.backends.base import BackendUnavailable, GenerationItem, GenerationParams
from gpu_workers.batch_retry import BatchRetries
from gpu_workers.batching import (
    expand_best_of_n,
    group_compatible,
    run_with_split,
    variant_seed,
)
from gpu_workers.request import build, identity
from processors.runtime import InputRecord
from processors.storage_keys import generated_digest, generated_key, generated_prefix
from schemas.topics import Topic
from tests.fixtures.avro_samples import JOB_V1


def test_group_compatible_keeps_arrival_order_and_caps_size() -> None:
    items = [("a", 1), ("b", 2), ("a", 3), ("a", 4), ("c", 5), ("b", 6), ("a", 7)]
    groups = group_compatible(items, key_fn=lambda i: i[0], max_batch=2)
    assert groups == [
        [("a", 1), ("a", 3)],
        [("a", 4), ("a", 7)],
        [("b", 2), ("b", 6)],
        [("c", 5)],
    ]


def test_group_compatible_edge_cases() -> None:
    assert group_compatible([], key_fn=str, max_batch=4) == []
    assert group_compatible([1, 2, 3], key_fn=lambda _: 0, max_batch=8) == [[1, 2, 3]]
    with pytest.raises(ValueError):
        group_compatible([1], key_fn=str, max_batch=0)


class _Recorder:
    """A run function that rejects poisoned items the way a model rejects a bad request."""

    def __init__(self, poisoned: set[int], exc: type[Exception] = ValueError) -> None:
        self.poisoned = poisoned
        self.exc = exc
        self.calls: list[list[int]] = []

    async def __call__(self, batch: list[int]) -> list[str]:
        self.calls.append(list(batch))
        await asyncio.sleep(0)
        bad = [i for i in batch if i in self.poisoned]
        if bad:
            raise self.exc(f"poisoned {bad}")
        return [f"img-{i}" for i in batch]


async def test_run_with_split_happy_path_is_one_call() -> None:
    run = _Recorder(set())
    results, failures = await run_with_split(list(range(8)), run)
    assert results == [f"img-{i}" for i in range(8)]
    assert failures == [] and run.calls == [list(range(8))]


async def test_run_with_split_isolates_one_poisoned_item() -> None:
    run = _Recorder({5})
    results, failures = await run_with_split(list(range(8)), run)
    assert results == [f"img-{i}" for i in range(8) if i != 5]
    assert [item for item, _ in failures] == [5]
    assert isinstance(failures[0][1], ValueError) and "poisoned [5]" in str(failures[0][1])
    # Bisection: 1 full call, then log2(8) levels with one failing and one passing half each.
    assert len(run.calls) == 1 + 2 * 3


async def test_run_with_split_isolates_several_and_handles_all_bad() -> None:
    run = _Recorder({0, 6})
    results, failures = await run_with_split(list(range(7)), run)
    assert len(results) == 5 and sorted(i for i, _ in failures) == [0, 6]

    all_bad = _Recorder({1, 2, 3})
    results, failures = await run_with_split([1, 2, 3], all_bad)
    assert results == [] and [i for i, _ in failures] == [1, 2, 3]
    assert len(all_bad.calls) <= 2 * 3 - 1


async def test_run_with_split_treats_oom_like_any_failure_and_calls_on_error() -> None:
    class FakeOOM(RuntimeError):
        pass

    seen: list[BaseException] = []

    async def run(batch: list[int]) -> list[int]:
        if len(batch) > 2:  # "too big for memory" rather than a bad item
            raise FakeOOM("CUDA out of memory")
        return batch

    results, failures = await run_with_split(list(range(8)), run, on_error=seen.append)
    assert results == list(range(8)) and failures == []
    assert seen and all(isinstance(e, FakeOOM) for e in seen)


async def test_run_with_split_does_not_split_when_backend_is_down() -> None:
    run = _Recorder(set(range(4)), exc=BackendUnavailable)
    results, failures = await run_with_split(list(range(4)), run)
    assert results == [] and len(failures) == 4 and len(run.calls) == 1
    assert all(isinstance(e, BackendUnavailable) for _, e in failures)


async def test_run_with_split_rejects_wrong_result_count_and_propagates_cancel() -> None:
    async def short(batch: list[int]) -> list[int]:
        return batch[:1]

    results, failures = await run_with_split([1, 2], short)
    assert results == [1, 2] and failures == []  # halves of one item each come back whole

    async def cancelled(batch: list[int]) -> list[int]:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await run_with_split([1, 2], cancelled)


def test_best_of_n_variants_share_a_batch_and_differ_in_seed() -> None:
    params = GenerationParams(
        model="m", width=64, height=64, steps=4, guidance=5.0, sampler="euler", seed=42, prompt="p"
    )
    item = GenerationItem(request_id="job-1#0", params=params)
    variants = expand_best_of_n(item, 4)
    assert [v.request_id for v in variants] == [f"job-1#{i}" for i in range(4)]
    seeds = [v.params.seed for v in variants]
    assert seeds[0] == 42 and len(set(seeds)) == 4
    assert seeds == [variant_seed(42, i) for i in range(4)]  # stable: regenerable from lineage
    groups = group_compatible(variants, key_fn=lambda v: (v.params.model, v.params.steps), max_batch=8)
    assert len(groups) == 1
    assert expand_best_of_n(item, 1) == [item]


def _request_record(
    offset: int, job_id: str = "job-1", prompt: str = "a mug", variants: int = 1
) -> InputRecord:
    job = copy.deepcopy(JOB_V1)
    job["job_id"] = job_id
    job["spec"]["variants"] = variants
    job["prompt"] = {
        "template_id": "t",
        "template_version": "1",
        "positive": prompt,
        "negative": "",
        "variables": {},
    }
    job["route"] = {
        "rule_id": "r",
        "rules_version": "1",
        "backend": "compositor",
        "model": "compositor",
        "pool": "cpu",
        "fallbacks": [],
        "params": {"steps": "4"},
        "canary": False,
    }
    return InputRecord(Topic.GENERATION_REQUESTS, 0, offset, job_id.encode(), job, b"", [], 0)


def test_copies_of_a_request_share_an_identity_and_different_requests_do_not() -> None:
    first, copy_of_first = _request_record(0), _request_record(5)
    assert identity(first) == identity(copy_of_first), "where a copy sits on the topic does not matter"
    assert identity(first) != identity(_request_record(0, prompt="a cup")), "same job id, other content"
    assert identity(first) != identity(_request_record(0, job_id="job-2"))


def test_item_ids_are_unique_in_a_batch_even_for_copies() -> None:
    a, b = build(_request_record(0, variants=2), slot=0), build(_request_record(1, variants=2), slot=1)
    ids = [item.request_id for item in a.items + b.items]
    assert len(set(ids)) == 4
    assert [a.variant_of(item) for item in a.items] == [0, 1]
    assert [item.params.seed for item in a.items] == [item.params.seed for item in b.items], "same pixels"


def test_batch_retries_name_every_job_and_come_out_once_for_that_batch() -> None:
    records = [_request_record(0, "job-a"), _request_record(1, "job-b")]
    retries = BatchRetries()
    first = retries.failed(records, "backends_unavailable", "remote: down")
    second = retries.failed(records, "storage_unavailable", "minio: timeout")
    assert [(e.job_id, e.state, e.reason) for e in first] == [
        ("job-a", "retry", "backends_unavailable"),
        ("job-b", "retry", "backends_unavailable"),
    ]
    assert {e.discriminator for e in first} == {"batch-try1"} and {e.discriminator for e in second} == {
        "batch-try2"
    }
    assert retries.take([_request_record(7, "job-z")]) == {}, "another batch's events are not this one's"
    taken = retries.take(records)
    # One event per job however many tries: the first failure's, with the count.
    assert {slot: [(e.reason, e.attributes["tries"]) for e in events] for slot, events in taken.items()} == {
        0: [("backends_unavailable", "2")],
        1: [("backends_unavailable", "2")],
    }
    assert retries.take(records) == {}, "taken once"


def test_generated_keys_name_their_content() -> None:
    digest = "ab" * 32
    key = generated_key("job-1", 2, 1, digest)
    assert key.startswith(generated_prefix("job-1")) and generated_digest(key) == digest
    assert generated_key("job-1", 2, 1, "cd" * 32) != key, "other pixels, other object"
    assert generated_digest("generated/job-1/a0/v0.png") is None  # written before keys had digests
    assert generated_digest(f"refs/sha256/ab/{digest}.png") is None
