"""The partition feed: everything the runner asks of the consumer, on the one thread that owns it.

- Batches: wait for the first message only, then take whatever else is already fetched.
- Fetch-ahead with backpressure (the prefetching runner): batches queue up while one is handled;
  past the high mark every assigned partition is paused (polling goes on, so the group keeps us),
  and they resume once the queue drains to the low mark.
- Holds: while a dependency is down (or a batch is simply taking long) the runner holds the
  partitions paused, and the feed keeps calling consume() on its thread (keepalive), so rebalance
  callbacks still run and max.poll.interval.ms never runs out: the stage stays in its group for
  as long as the outage lasts. A message consume() hands over meanwhile (from a partition
  assigned before it could be paused) is carried into the next batch, never dropped.
- Gaps: a partition whose next message is past the offset the feed expected (its committed
  offset after an assignment, or the last offset + 1), where the broker's log now starts past
  that offset too, lost the messages in between to retention before anyone read them
  (auto.offset.reset moved the consumer on without a word). Each such gap is kept for the runner
  to record as an `offset_reset` event (topic, partition, from, to).
- Revokes: a batch fetched before its partition was revoked is stale. It is dropped unprocessed and
  uncommitted; the partition's new owner reads it again, so nothing is lost. The stage hears of
  revokes as of assignments (its state for those partitions is the new owner's now).
- Commits (commits.py) and the lag gauge, from the watermarks the fetcher already has.

The confluent-kafka consumer is not meant to be shared across threads, so every call to it goes
through one dedicated thread; the rebalance callbacks run there too, inside consume(). Pausing
keeps what the consumer already fetched from being handed over (librdkafka drops it and fetches
again from the position after the last message it gave us when the partition resumes).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from confluent_kafka import KafkaError, Message, TopicPartition

from processors.config import StageSettings
from processors.metrics import StageMetrics
from processors.runtime.commits import Commits, Partition

T = TypeVar("T")


# How long one keepalive consume() waits: the poll thread is free for commits in between.
KEEPALIVE_POLL_S = 0.5
# Broker round trips the feed makes on its own (committed offsets, watermarks on a gap).
LOOKUP_TIMEOUT_S = 5.0
BACKPRESSURE = "backpressure"


@dataclass
class Fetched:
    """One consumed batch and the number of the consume() call that fetched it."""

    seq: int
    messages: list[Message]


@dataclass(frozen=True)
class Gap:
    """Offsets [start, end) of a partition that were deleted before this consumer read them."""

    topic: str
    partition: int
    start: int
    end: int

    @property
    def lost(self) -> int:
        return self.end - self.start


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
        on_revoked: Callable[[str, list[int]], None] | None = None,
    ) -> None:
        self.consumer = consumer
        self.stage_name = stage_name
        self.settings = settings
        self.metrics = metrics
        self.log = log
        self._on_assigned = on_assigned
        self._on_revoked = on_revoked
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"poll-{stage_name}")
        self.commits = Commits(log)
        self.paused = False
        self._assigned_while_paused = False
        # Partitions paused and not resumed since: librdkafka keeps a partition's pause across
        # losing and regaining it, so one paused when the group took it away (a broker outage
        # while a batch was held) would come back paused, with nobody left to resume it, and its
        # records would wait for ever. Such a one, assigned again while nothing holds the feed, is
        # resumed before the next consume().
        self._left_paused: set[Partition] = set()
        self._to_resume: list[TopicPartition] = []
        self._seq = 0  # consume() calls so far; only the poll thread changes it
        self._revoked_at: dict[Partition, int] = {}
        self._revoked_lock = threading.Lock()
        # Why the partitions are held paused (backpressure, an outage, a long batch); changed only
        # on the poll thread. Paused while any reason is left.
        self._reasons: set[str] = set()
        self._fetching_ahead = False
        self._keepalive: asyncio.Task[None] | None = None
        # Messages consume() handed over while the partitions were held: the next batch's first.
        self._carry: deque[Message] = deque()
        # Continuity: the next offset expected per partition; partitions whose committed offset is
        # still to be compared with their first message since assignment.
        self._expected: dict[Partition, int] = {}
        self._unchecked: set[Partition] = set()
        self._gaps: list[Gap] = []

    # -- the poll thread ---------------------------------------------------------------------

    async def call(self, func: Callable[[], T]) -> T:
        """Run `func` on the poll thread (the handlers' to_thread calls never wait on it)."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, func)

    def subscribe(self, topics: list[str]) -> None:
        self.consumer.subscribe(topics, on_assign=self._on_assign, on_revoke=self._on_revoke)

    def close(self) -> None:
        # close() commits nothing (auto-commit is off) and leaves the group promptly.
        self._reasons.clear()
        if self._keepalive is not None:
            self._keepalive.cancel()
        # On the poll thread, after whatever it is doing (a keepalive consume): never two threads
        # in the consumer at once.
        self._thread.submit(self.consumer.close).result(timeout=60)
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
        carried = [self._carry.popleft() for _ in range(min(size, len(self._carry)))]
        if carried:
            fresh = self._consume(size - len(carried), 0) if len(carried) < size else []
            return Fetched(seq, carried + fresh)
        first = self._consume(1, timeout_s)
        if not first or size <= 1:
            return Fetched(seq, first)
        return Fetched(seq, first + self._consume(size - 1, self.settings.batch_linger_s))

    def _consume(self, size: int, timeout_s: float) -> list[Message]:
        if self._to_resume:
            fresh, self._to_resume = self._to_resume, []
            if not self.paused:
                self.consumer.resume(fresh)
                self._left_paused.difference_update((tp.topic, tp.partition) for tp in fresh)
        messages = list(self.consumer.consume(size, timeout_s))
        self._check_continuity(messages)
        return messages

    def over_limit(self, message: Message) -> int | None:
        """A consumer group redelivers only after a crash, and counts nothing: never over."""
        return None

    async def fetch_ahead(self, queue: AheadQueue, high: int, stopping: asyncio.Event) -> None:
        """Keep `queue` filled until `stopping`; pause at `high` queued batches, resume at half."""
        low = max(0, high // 2)
        self._fetching_ahead = True
        try:
            while not stopping.is_set():
                fetched = await self.fetch()
                if fetched.messages:
                    queue.put(fetched)
                queued = len(queue)
                if queued >= high and BACKPRESSURE not in self._reasons:
                    await self.call(functools.partial(self._add_reason, BACKPRESSURE, queued))
                elif queued <= low and BACKPRESSURE in self._reasons:
                    await self.call(functools.partial(self._remove_reason, BACKPRESSURE))
                elif self.paused and self._assigned_while_paused:
                    # After a rebalance: newly assigned partitions must not run unpaused.
                    await self.call(self._sync_flow)
        finally:
            self._fetching_ahead = False

    # -- holding the partitions ----------------------------------------------------------------

    async def hold(self, reason: str) -> None:
        """Pause every assigned partition for `reason` and keep polling until release(reason)."""
        await self.call(functools.partial(self._add_reason, reason, 0))
        if not self._fetching_ahead and (self._keepalive is None or self._keepalive.done()):
            self._keepalive = asyncio.create_task(self._keep_alive())

    async def release(self, reason: str) -> None:
        await self.call(functools.partial(self._remove_reason, reason))
        if not self._reasons and self._keepalive is not None:
            keepalive, self._keepalive = self._keepalive, None
            await keepalive

    @property
    def held(self) -> frozenset[str]:
        return frozenset(self._reasons)

    @contextlib.asynccontextmanager
    async def held_after(self, seconds: float, reason: str = "long batch") -> AsyncIterator[None]:
        """Hold the partitions if the block is still running after `seconds` (the fetch-ahead
        loop polls anyway, so only the in-turn loop needs it)."""
        if self._fetching_ahead or seconds <= 0:
            yield
            return
        held = False

        async def hold_later() -> None:
            nonlocal held
            await asyncio.sleep(seconds)
            held = True
            self.log.info("batch still in hand after %.0fs: holding the partitions and polling", seconds)
            await self.hold(reason)

        timer = asyncio.create_task(hold_later())
        try:
            yield
        finally:
            timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timer
            if held:
                await self.release(reason)

    async def _keep_alive(self) -> None:
        """consume() on the poll thread while the partitions are held: the group keeps us."""
        while self._reasons and not self._fetching_ahead:
            await self.call(self._poll_held)

    def _poll_held(self) -> None:
        # A consume() like any other: a revoke inside it makes the batch in hand stale.
        self._seq += 1
        self._sync_flow()
        messages = self._consume(self.settings.batch_size, KEEPALIVE_POLL_S)
        self._carry.extend(m for m in messages if not m.error())

    def _add_reason(self, reason: str, queued: int) -> None:
        self._reasons.add(reason)
        self._sync_flow(reason, queued)

    def _remove_reason(self, reason: str) -> None:
        self._reasons.discard(reason)
        self._sync_flow(reason)

    def _sync_flow(self, reason: str = "", queued: int = 0) -> None:
        """Pause everything assigned while a reason is left (and what was assigned since), resume
        once none is."""
        if self._reasons and (not self.paused or self._assigned_while_paused):
            assignment = self.consumer.assignment()
            if assignment:
                self.consumer.pause(assignment)
                self._left_paused.update((tp.topic, tp.partition) for tp in assignment)
            self._assigned_while_paused = False
            if not self.paused and reason == BACKPRESSURE:
                self.metrics.paused.labels(self.stage_name).inc()
                self.log.info("queue full (%d batches): paused %d partition(s)", queued, len(assignment))
            elif not self.paused:
                self.log.info("paused %d partition(s): %s", len(assignment), reason or "held")
            self.paused = True
            self.metrics.held.labels(self.stage_name).set(1 if self._reasons - {BACKPRESSURE} else 0)
        elif not self._reasons and self.paused:
            assignment = self.consumer.assignment()
            if assignment:
                self.consumer.resume(assignment)
                self._left_paused.difference_update((tp.topic, tp.partition) for tp in assignment)
            self.paused = False
            self.metrics.held.labels(self.stage_name).set(0)
            what = "queue drained" if reason == BACKPRESSURE else f"{reason or 'hold'} over"
            self.log.info("%s: resumed %d partition(s)", what, len(assignment))
        else:
            self.metrics.held.labels(self.stage_name).set(1 if self._reasons - {BACKPRESSURE} else 0)

    # -- gaps ----------------------------------------------------------------------------------

    def take_gaps(self) -> list[Gap]:
        """The gaps found since the last call (called on the event loop between batches)."""
        gaps, self._gaps = self._gaps, []
        return gaps

    def _check_continuity(self, messages: list[Message]) -> None:
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._AUTO_OFFSET_RESET:
                    # Only with auto.offset.reset=error; ours resets, and is caught below.
                    self.log.warning("offset reset: %s", error)
                continue
            tp = (str(message.topic()), int(message.partition() or 0))
            offset = int(message.offset() or 0)
            if tp in self._unchecked:
                self._unchecked.discard(tp)
                committed = self._committed_offset(tp)
                if committed is not None:
                    self._expected[tp] = committed
            expected = self._expected.get(tp)
            if expected is not None and offset > expected:
                low = self._log_start(tp)
                if low is not None and low > expected:
                    gap = Gap(tp[0], tp[1], expected, min(low, offset))
                    self._gaps.append(gap)
                    self.metrics.offset_resets.labels(self.stage_name).inc()
                    self.log.error(
                        "%s/%d resumed at %d: offsets %d..%d were deleted (retention) before %s read them",
                        gap.topic,
                        gap.partition,
                        offset,
                        gap.start,
                        gap.end - 1,
                        self.stage_name,
                    )
            self._expected[tp] = offset + 1

    def _committed_offset(self, tp: Partition) -> int | None:
        try:
            (found,) = self.consumer.committed([TopicPartition(*tp)], timeout=LOOKUP_TIMEOUT_S)
        except Exception as exc:  # an unreachable coordinator: no check for this assignment
            self.log.warning("no committed offset for %s/%d: %s", tp[0], tp[1], exc)
            return None
        return found.offset if found.offset >= 0 else None

    def _log_start(self, tp: Partition) -> int | None:
        """The partition's first offset, as the consumer last heard it from the broker: every
        fetch response carries it, and so does the lookup of an offset reset, which is how a
        retention gap arrives. The broker is asked only when the consumer knows none yet. Under
        exactly-once every record after a transaction skips its commit marker's offset, so a gap
        is the rule, and a query would wait behind the consumer's fetch parked at the broker (one
        connection, answered in order): up to kafka.fetch_wait_max_ms on every hop."""
        partition = TopicPartition(*tp)
        try:
            low, _ = self.consumer.get_watermark_offsets(partition, cached=True)
            if low >= 0:  # -1001: none heard yet
                return int(low)
            low, _ = self.consumer.get_watermark_offsets(partition, timeout=LOOKUP_TIMEOUT_S)
        except Exception as exc:
            self.log.warning("no watermarks for %s/%d: %s", tp[0], tp[1], exc)
            return None
        return int(low)

    # -- rebalances --------------------------------------------------------------------------

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        # Inside the consume() of fetch number `_seq`: batches fetched up to now are stale for
        # these partitions; batches fetched later (after a re-assignment) are processed as usual.
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        with self._revoked_lock:
            for tp in revoked:
                self._revoked_at[tp] = self._seq
        # Carried messages of these partitions are the new owner's now (uncommitted: it reads them).
        self._carry = deque(m for m in self._carry if (m.topic(), m.partition()) not in revoked)
        for tp in revoked:
            self._expected.pop(tp, None)
            self._unchecked.discard(tp)
        if self._on_revoked is not None:
            for name, numbers in _by_topic(partitions).items():
                self._on_revoked(name, numbers)

    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        if self.paused:
            self._assigned_while_paused = True
        else:
            self._to_resume.extend(tp for tp in partitions if (tp.topic, tp.partition) in self._left_paused)
        for tp in partitions:
            # Compared with the committed offset when its first message arrives.
            self._expected.pop((tp.topic, tp.partition), None)
            self._unchecked.add((tp.topic, tp.partition))
        for name, numbers in _by_topic(partitions).items():
            self._on_assigned(name, numbers)

    def still_owned(self, fetched: Fetched) -> list[Message]:
        """The batch without the messages of partitions revoked since it was fetched."""
        with self._revoked_lock:
            revoked_at = dict(self._revoked_at)
        if not revoked_at:
            return fetched.messages
        return [m for m in fetched.messages if revoked_at.get((m.topic(), m.partition()), 0) <= fetched.seq]

    # -- after a batch -----------------------------------------------------------------------

    async def group_metadata(self) -> Any:
        """The consumer's group generation, for send_offsets_to_transaction (KIP-447 fencing)."""
        return await self.call(self.consumer.consumer_group_metadata)

    async def commit(self, messages: list[Message]) -> None:
        await self.call(lambda: self.commits.commit(self.consumer, messages))

    async def committed(self, partitions: list[Partition]) -> dict[Partition, int | None]:
        """The group's committed offsets, as the broker has them now (None: none, or no answer)."""
        return await self.call(lambda: {tp: self._committed_offset(tp) for tp in partitions})

    async def commit_past_markers(self) -> None:
        """When idle: move each partition's commit past the transaction markers after its last
        record. A transactional producer ends every transaction with a control record, so the
        offset after a partition's last record is a marker no consumer is ever handed; committed
        there, the group would show a lag of one per transaction end for ever (and whatever waits
        for lag 0, an operator or a drain, would wait for ever). The consumer's position already
        stepped over them; it is committed only for a partition whose every handed-over message
        is committed, so nothing unprocessed is ever skipped. Call it with no batch in hand."""
        await self.call(self._commit_past_markers)

    def _commit_past_markers(self) -> None:
        assignment = self.consumer.assignment()
        if not assignment:
            return
        carried = {(m.topic(), m.partition()) for m in self._carry}
        ahead: dict[Partition, int] = {}
        for tp in self.consumer.position(assignment):
            key = (tp.topic, tp.partition)
            if tp.offset < 0 or key in carried:
                continue
            handed = self._expected.get(key)
            if handed is None:
                # Nothing handed over since the assignment (a restart onto a commit that sits on a
                # marker): the position moved past markers alone, if at all.
                committed = self._committed_offset(key)
                if committed is None:
                    continue
                self._expected[key] = handed = committed
                self._unchecked.discard(key)
                self.commits.mark({key: committed})
            if self.commits.committed.get(key, -1) == handed and tp.offset > handed:
                ahead[key] = tp.offset
        self.commits.commit_offsets(self.consumer, ahead)

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


def _by_topic(partitions: list[TopicPartition]) -> dict[str, list[int]]:
    by_topic: dict[str, list[int]] = {}
    for tp in partitions:
        by_topic.setdefault(tp.topic, []).append(tp.partition)
    return by_topic
