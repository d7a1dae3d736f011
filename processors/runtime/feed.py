"""The partition feed: everything the runner asks of the consumer, on the one thread that owns it.

- Batches: wait for the first message only, then take whatever else is already fetched.
- Fetch-ahead with backpressure (the prefetching runner): batches queue up while one is handled;
  past the high mark every assigned partition is paused (polling goes on, so the group keeps us),
  and they resume once the queue drains to the low mark.
- Revokes: a batch fetched before its partition was revoked is stale. It is dropped unprocessed and
  uncommitted; the partition's new owner reads it again, so nothing is lost.
- Commits (commits.py) and the lag gauge, from the watermarks the fetcher already has.

The confluent-kafka consumer is not meant to be shared across threads, so every call to it goes
through one dedicated thread; the rebalance callbacks run there too, inside consume().
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from confluent_kafka import Message, TopicPartition

from processors.config import StageSettings
from processors.metrics import StageMetrics
from processors.runtime.commits import Commits, Partition

T = TypeVar("T")


@dataclass
class Fetched:
    """One consumed batch and the number of the consume() call that fetched it."""

    seq: int
    messages: list[Message]


class AheadQueue:
    """Batches fetched ahead, oldest first; the handler side waits on it with a timeout."""

    def __init__(self) -> None:
        self._items: deque[Fetched] = deque()
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, fetched: Fetched) -> None:
        self._items.append(fetched)
        self._ready.set()

    async def get(self, timeout_s: float) -> Fetched | None:
        """The oldest batch, or None if none arrived within the timeout."""
        if not self._items:
            self._ready.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), timeout=timeout_s)
            return None
        return self._items.popleft()


class PartitionFeed:
    def __init__(
        self,
        consumer: Any,
        stage_name: str,
        settings: StageSettings,
        metrics: StageMetrics,
        log: logging.Logger,
        on_assigned: Callable[[str, list[int]], None],
    ) -> None:
        self.consumer = consumer
        self.stage_name = stage_name
        self.settings = settings
        self.metrics = metrics
        self.log = log
        self._on_assigned = on_assigned
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"poll-{stage_name}")
        self.commits = Commits(log)
        self.paused = False
        self._assigned_while_paused = False
        self._seq = 0  # consume() calls so far; only the poll thread changes it
        self._revoked_at: dict[Partition, int] = {}
        self._revoked_lock = threading.Lock()

    # -- the poll thread ---------------------------------------------------------------------

    async def call(self, func: Callable[[], T]) -> T:
        """Run `func` on the poll thread (the handlers' to_thread calls never wait on it)."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, func)

    def subscribe(self, topics: list[str]) -> None:
        self.consumer.subscribe(topics, on_assign=self._on_assign, on_revoke=self._on_revoke)

    def close(self) -> None:
        # close() commits nothing (auto-commit is off) and leaves the group promptly.
        self.consumer.close()
        self._thread.shutdown(wait=False)

    # -- batches -----------------------------------------------------------------------------

    async def fetch(self) -> Fetched:
        size, timeout_s = self.settings.batch_size, self.settings.batch_timeout_s
        return await self.call(lambda: self._consume_batch(size, timeout_s))

    def _consume_batch(self, size: int, timeout_s: float) -> Fetched:
        # consume(n, timeout) alone waits the full timeout unless n messages are ready, adding that
        # wait to every hop of a lightly loaded pipeline; under load batches still fill up.
        self._seq += 1
        seq = self._seq
        first = self.consumer.consume(1, timeout_s)
        if not first or size <= 1:
            return Fetched(seq, list(first))
        return Fetched(seq, list(first) + list(self.consumer.consume(size - 1, 0)))

    async def fetch_ahead(self, queue: AheadQueue, high: int, stopping: asyncio.Event) -> None:
        """Keep `queue` filled until `stopping`; pause at `high` queued batches, resume at half."""
        low = max(0, high // 2)
        while not stopping.is_set():
            fetched = await self.fetch()
            if fetched.messages:
                queue.put(fetched)
            queued = len(queue)
            if (queued >= high and not self.paused) or (self.paused and self._assigned_while_paused):
                # Also after a rebalance: newly assigned partitions must not run unpaused.
                await self.call(functools.partial(self._pause, queued))
            elif queued <= low and self.paused:
                await self.call(self._resume)

    def _pause(self, queued: int) -> None:
        assignment = self.consumer.assignment()
        if assignment:
            self.consumer.pause(assignment)
        self._assigned_while_paused = False
        self.paused = True
        self.metrics.paused.labels(self.stage_name).inc()
        self.log.info("queue full (%d batches): paused %d partition(s)", queued, len(assignment))

    def _resume(self) -> None:
        assignment = self.consumer.assignment()
        if assignment:
            self.consumer.resume(assignment)
        self.paused = False
        self.log.info("queue drained: resumed %d partition(s)", len(assignment))

    # -- rebalances --------------------------------------------------------------------------

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        # Inside the consume() of fetch number `_seq`: batches fetched up to now are stale for
        # these partitions; batches fetched later (after a re-assignment) are processed as usual.
        with self._revoked_lock:
            for tp in partitions:
                self._revoked_at[(tp.topic, tp.partition)] = self._seq

    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        if self.paused:
            self._assigned_while_paused = True
        by_topic: dict[str, list[int]] = {}
        for tp in partitions:
            by_topic.setdefault(tp.topic, []).append(tp.partition)
        for name, numbers in by_topic.items():
            self._on_assigned(name, numbers)

    def still_owned(self, fetched: Fetched) -> list[Message]:
        """The batch without the messages of partitions revoked since it was fetched."""
        with self._revoked_lock:
            revoked_at = dict(self._revoked_at)
        if not revoked_at:
            return fetched.messages
        return [m for m in fetched.messages if revoked_at.get((m.topic(), m.partition()), 0) <= fetched.seq]

    # -- after a batch -----------------------------------------------------------------------

    async def commit(self, messages: list[Message]) -> None:
        await self.call(lambda: self.commits.commit(self.consumer, messages))

    async def record_lag(self) -> None:
        await self.call(self._record_lag)

    def _record_lag(self) -> None:
        """Consumer lag per assigned partition: high watermark minus position."""
        assignment = self.consumer.assignment()
        if not assignment:
            return
        for tp in self.consumer.position(assignment):
            if tp.offset < 0:
                continue
            _, high = self.consumer.get_watermark_offsets(tp, cached=True)
            if high >= 0:
                label = f"{tp.topic}/{tp.partition}"
                self.metrics.lag.labels(self.stage_name, label).set(max(0, high - tp.offset))
