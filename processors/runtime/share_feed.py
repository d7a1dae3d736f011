"""The share feed: the runner's feed for a stage that reads its input as a Kafka share group.

A share group (KIP-932) hands records, not partitions, to its members: any number of workers read
one partition, each record is acquired by one of them under a time-limited lock, and each is
acknowledged on its own. The runner drives this feed like the partition feed (feed.py), in turn:

- fetch(): one poll. In explicit acknowledgement mode every record of a poll must be acknowledged
  before the next poll, so there is no fetch-ahead and no keepalive polling while a batch is held;
  a batch is what one poll brought. The broker acquires whole produced batches (librdkafka 2.16
  has no share.acquire.mode=record_limit), so max.poll.records (stage.batch_size) is a soft cap:
  a poll may bring all the records one upstream transaction wrote to a partition.
- commit(messages): after the batch's outputs (or dead letters) were delivered, each record is
  ACCEPTed and the acknowledgements are committed (commit_sync). A worker that dies before that
  leaves its records acquired; the broker hands them to another member when their lock runs out
  (the group's share.record.lock.duration.ms, generation.share_lock_s), their delivery count one
  higher.
- A poll that brought a redelivered record is handed over one record at a time, each
  acknowledged before the next (explicit mode allows that before the next poll): a record that
  kills its worker then takes only itself to the dead-letter path, not the records the broker
  happened to hand over with it.
- over_limit(message): a record handed over more than generation.share_max_deliveries times (its
  workers keep dying on it, or keep being held past the lock) is dead-lettered instead of being
  processed again; the group's share.delivery.count.limit is set one above, so the broker never
  archives it silently first.

What it cannot do, and the runner must not ask of it: offsets in a transaction (a share group
has no offsets to send: outputs are produced at least once, not exactly once), pausing (nothing
is assigned), ordering within a partition (records of one partition go to many workers; a
released record comes back after later ones). Everything else the partition feed offers (holds,
revokes, gaps, lag, commits past markers) is a no-op here: there is nothing to hold, revoke or
commit past, and the group's backlog is the broker's to report.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from confluent_kafka import AcknowledgeType, IllegalStateException, KafkaException, Message

from processors.config import StageSettings
from processors.metrics import StageMetrics
from processors.runtime.commits import Partition
from processors.runtime.feed import Fetched, Gap

T = TypeVar("T")

COMMIT_TIMEOUT_S = 30.0
# Setting the group's configs before joining: how long a broker that is still starting (or whose
# group coordinator is not loaded yet) is waited for before the stage fails to start.
PREPARE_GROUP_FOR_S = 60.0


class RedeliveredTooOften(Exception):
    """A share group handed this record over more often than the stage allows."""

    reason = "redelivered_too_often"

    def __init__(self, deliveries: int, limit: int) -> None:
        super().__init__(
            f"delivered {deliveries} times (limit {limit}): every worker that took it before died or "
            "held it past its lock"
        )
        self.deliveries = deliveries


class ShareFeed:
    """The partition feed's interface over a confluent_kafka.ShareConsumer (explicit acks)."""

    def __init__(
        self,
        consumer: Any,
        stage_name: str,
        settings: StageSettings,
        metrics: StageMetrics,
        log: logging.Logger,
        max_deliveries: int,
        prepare_group: Callable[[], None] | None = None,
    ) -> None:
        self.consumer = consumer
        self.stage_name = stage_name
        self.settings = settings
        self.metrics = metrics
        self.log = log
        self.max_deliveries = max_deliveries
        self._prepare_group = prepare_group
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"share-{stage_name}")
        self._reasons: set[str] = set()
        self._seq = 0
        # Records of the last poll not handed over yet (one at a time after a redelivery).
        self._polled: deque[Message] = deque()

    async def call(self, func: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, func)

    def subscribe(self, topics: list[str]) -> None:
        if self._prepare_group is not None:
            self._prepare_group_retrying()
        self.consumer.subscribe(topics)

    def _prepare_group_retrying(self) -> None:
        assert self._prepare_group is not None
        deadline = time.monotonic() + PREPARE_GROUP_FOR_S
        while True:
            try:
                self._prepare_group()
                return
            except (KafkaException, TimeoutError) as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"could not set the share group's configs within {PREPARE_GROUP_FOR_S:g} s: {exc}"
                    ) from exc
                self.log.warning("share group configs not set yet (%s); trying again", exc)
                time.sleep(1.0)

    def close(self) -> None:
        # close() sends the acknowledgements already made and leaves the group; records acquired
        # and not acknowledged (a batch abandoned on stop) go back to the group for others.
        self._thread.submit(self.consumer.close).result(timeout=60)
        self._thread.shutdown(wait=False)

    # -- batches -----------------------------------------------------------------------------

    async def fetch(self) -> Fetched:
        return await self.call(self._poll)

    def _poll(self) -> Fetched:
        self._seq += 1
        if not self._polled:
            self._polled.extend(self._records_of(list(self.consumer.poll(self.settings.batch_timeout_s))))
        if any((m.delivery_count() or 1) > 1 for m in self._polled):
            return Fetched(self._seq, [self._polled.popleft()])
        records, self._polled = list(self._polled), deque()
        return Fetched(self._seq, records)

    def _records_of(self, messages: list[Message]) -> list[Message]:
        records = []
        for message in messages:
            error = message.error()
            if error is not None:
                self.log.warning("share consume error: %s", error)
                continue
            records.append(message)
            count = message.delivery_count() or 1
            if count > 1:
                # Its earlier holder died (or held it past its lock): its outputs may be out
                # already; downstream de-duplicates them (docs/reliability.md).
                self.log.info(
                    "redelivered record %s/%d@%d (delivery %d)",
                    message.topic(),
                    message.partition(),
                    message.offset(),
                    count,
                )
        if records:
            self.log.debug("acquired %d record(s)", len(records))
        return records

    def over_limit(self, message: Message) -> int | None:
        """The record's delivery count when it is past the stage's limit, else None."""
        count = message.delivery_count()
        if count is not None and count > self.max_deliveries:
            return int(count)
        return None

    async def fetch_ahead(self, *_: Any) -> None:
        raise RuntimeError("a share feed cannot fetch ahead: every poll's records are acknowledged first")

    # -- after a batch -----------------------------------------------------------------------

    async def commit(self, messages: list[Message]) -> None:
        """Accept each record (its outputs, or its dead letter, are delivered) and commit."""
        await self.call(lambda: self._accept(messages))

    def _accept(self, messages: list[Message]) -> None:
        for message in messages:
            if message.error() is not None:
                continue
            try:
                self.consumer.acknowledge(message, AcknowledgeType.ACCEPT)
            except (IllegalStateException, KafkaException) as exc:
                # No longer in flight: its lock ran out (or this member was fenced) and the group
                # hands it to another worker; its outputs are out, downstream de-duplicates.
                self.log.warning(
                    "record %s/%d@%d not acknowledged (%s): it will be redelivered",
                    message.topic(), message.partition(), message.offset(), exc,
                )  # fmt: skip
        try:
            results = self.consumer.commit_sync(COMMIT_TIMEOUT_S)
        except KafkaException as exc:
            # The records come back to the group (their locks run out) and are done again: the
            # outputs were delivered, and downstream's de-duplication makes the copy harmless.
            self.log.warning("acknowledgements not committed, the batch will be redelivered: %s", exc)
            return
        self.log.debug("acknowledged %d record(s)", len(messages))
        failed = {tp: err for tp, err in (results or {}).items() if err is not None}
        for tp, err in failed.items():
            self.log.warning(
                "acknowledgements of %s/%d not committed (redelivered later): %s", tp.topic, tp.partition, err
            )

    # -- what the partition feed does that has no meaning here ---------------------------------

    def still_owned(self, fetched: Fetched) -> list[Message]:
        # Records are acquired one by one under a lock; no rebalance takes them away mid-batch.
        return fetched.messages

    def take_gaps(self) -> list[Gap]:
        return []

    async def commit_past_markers(self) -> None:
        return None

    async def record_lag(self) -> None:
        return None

    async def committed(self, partitions: list[Partition]) -> dict[Partition, int | None]:
        return dict.fromkeys(partitions)

    async def group_metadata(self) -> Any:
        raise RuntimeError("a share group has no offsets to send in a transaction")

    async def hold(self, reason: str) -> None:
        # Nothing to pause, and no poll allowed before this batch is acknowledged: a hold lasting
        # past the record lock hands the batch to another worker (its delivery count up one).
        self._reasons.add(reason)
        self.metrics.held.labels(self.stage_name).set(1)

    async def release(self, reason: str) -> None:
        self._reasons.discard(reason)
        if not self._reasons:
            self.metrics.held.labels(self.stage_name).set(0)

    @property
    def held(self) -> frozenset[str]:
        return frozenset(self._reasons)

    @contextlib.asynccontextmanager
    async def held_after(self, seconds: float, reason: str = "long batch") -> AsyncIterator[None]:
        yield
