"""Pure batching helpers for the generation worker.

The worker polls a bundle of requests, groups the ones that can share one forward pass, and runs
each group so that one bad request (a prompt the model rejects, an input that blows up memory) costs
only itself: a failing batch is split in halves and each half retried, down to single items.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Awaitable, Callable, Hashable, Iterable, Sequence
from typing import TypeVar

from gpu_workers.backends.base import BackendUnavailable, GenerationItem

T = TypeVar("T")
R = TypeVar("R")

Failure = tuple[T, BaseException]


def group_compatible(items: Iterable[T], key_fn: Callable[[T], Hashable], max_batch: int) -> list[list[T]]:
    """Groups of items with equal keys, each at most max_batch long.

    Groups come out in the order their first item arrived and keep arrival order inside, so the
    oldest request is always in the first batch run.
    """
    if max_batch < 1:
        raise ValueError("max_batch must be at least 1")
    by_key: dict[Hashable, list[T]] = {}
    for item in items:
        by_key.setdefault(key_fn(item), []).append(item)
    batches: list[list[T]] = []
    for group in by_key.values():
        batches.extend(group[i : i + max_batch] for i in range(0, len(group), max_batch))
    return batches


async def run_with_split(
    batch: Sequence[T],
    run: Callable[[list[T]], Awaitable[list[R]]],
    *,
    fail_whole: tuple[type[BaseException], ...] = (BackendUnavailable,),
    on_error: Callable[[BaseException], None] | None = None,
) -> tuple[list[R], list[Failure[T]]]:
    """Run a batch; on failure bisect it so every good item still gets its result.

    Returns the results of the items that succeeded (in batch order) and (item, exception) for
    each item that failed on its own. Splitting costs at most 2n-1 calls and isolates k bad items
    in O(k log n) extra calls. Exceptions in ``fail_whole`` (a backend that is down) are not
    split: halving cannot help, so every item gets that exception and the caller fails over.
    ``on_error`` runs before each retry, e.g. ``torch.cuda.empty_cache`` after an OOM.
    Cancellation and other non-Exception BaseExceptions propagate.
    """
    items = list(batch)
    if not items:
        return [], []
    try:
        results = list(await run(items))
        if len(results) != len(items):
            raise RuntimeError(f"backend returned {len(results)} results for {len(items)} items")
        return results, []
    except fail_whole as exc:
        return [], [(item, exc) for item in items]
    except Exception as exc:
        if on_error is not None:
            on_error(exc)
        if len(items) == 1:
            return [], [(items[0], exc)]
        mid = len(items) // 2
        left_ok, left_bad = await run_with_split(items[:mid], run, fail_whole=fail_whole, on_error=on_error)
        right_ok, right_bad = await run_with_split(items[mid:], run, fail_whole=fail_whole, on_error=on_error)
        return left_ok + right_ok, left_bad + right_bad


def variant_seed(base_seed: int, index: int) -> int:
    """Seed of variant ``index``: variant 0 keeps the job's seed; others are derived stably.

    Derived by hashing rather than base+index so neighbouring jobs' variants never collide.
    """
    if index == 0:
        return base_seed
    digest = hashlib.sha256(f"{base_seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFF_FFFF


def expand_best_of_n(item: GenerationItem, n: int) -> list[GenerationItem]:
    """N variants of one request that differ only in seed, so they land in the same batch.

    Request ids become ``<job_id>#<i>`` (job id = the id up to any existing ``#``); the quality
    stage picks the best and records the rest.
    """
    if n < 1:
        raise ValueError("n must be at least 1")
    if n == 1:
        return [item]
    job_id = item.request_id.split("#", 1)[0]
    return [
        dataclasses.replace(
            item,
            request_id=f"{job_id}#{i}",
            params=dataclasses.replace(item.params, seed=variant_seed(item.params.seed, i)),
        )
        for i in range(n)
    ]
