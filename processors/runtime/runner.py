"""Consume-process-produce-commit for one stage, at least once: the spine.

Per batch: the feed polls up to N records; prepare() decodes each (undecodable: dead-lettered at
once) and handles them through the one retry loop (exhausted or permanent: dead-lettered); the
outbox encodes every output, pipeline event and dead letter; finish() waits for the batch's side
effects, produces everything, waits until the broker acknowledged it, and only then commits the
batch's offsets. A crash anywhere before the commit replays the batch; handlers make that harmless
with deterministic keys and ids. SIGTERM finishes the batch in hand, commits, and leaves the group.

Two loops: in turn (poll, process, commit: the CPU stages) and prefetching (the GPU worker: the
next batches are fetched and handled while the last one's uploads, produce and commit finish).

The parts, one concern each:
    feed.py      the consumer on its poll thread: batches, fetch-ahead with pause/resume, revokes,
                 commits (commits.py) and lag
    codec.py     bytes to InputRecord and back
    retry.py     the one retry loop, for Stage and BatchStage alike
    outbox.py    encoding outcomes and pipeline events (deterministic ids), the undeclared-output
                 check, produce and confirm
    dlq.py       the dead letter: its envelope, headers and event
    memory.py    an in-memory broker, consumer and producer, to run all of this without Kafka

The consumer and producer are confluent-kafka's by default; pass others (memory.py's) to test.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

from confluent_kafka import KafkaError, Message

from processors.kafka_clients import group_id_for, make_consumer, make_producer
from processors.logs import current_job_id, current_stage
from processors.runtime.codec import Codec
from processors.runtime.errors import is_permanent
from processors.runtime.feed import AheadQueue, PartitionFeed
from processors.runtime.outbox import Outbox, Pending
from processors.runtime.records import Event, InputRecord
from processors.runtime.retry import GaveUp, RetryPolicy, with_retries
from processors.runtime.stage import BatchStage, Stage
from schemas.serde import SerdeError


class StageRunner:
    def __init__(self, stage: Stage, consumer: Any | None = None, producer: Any | None = None) -> None:
        declared = getattr(type(stage), "outputs", None)
        if declared is None:
            raise TypeError(f"stage {stage.name!r} must declare `outputs` (the topics it may produce to)")
        self.stage = stage
        self.ctx = stage.ctx
        self.settings = stage.ctx.settings
        self.log = logging.getLogger(f"lightbox.runtime.{stage.name}")
        self.metrics = stage.ctx.metrics
        self.policy = RetryPolicy.of(self.settings.stage)
        self._stopping = asyncio.Event()
        if consumer is None:
            consumer = make_consumer(self.settings, group_id_for(self.settings, stage.name))
        self.consumer = consumer
        self.producer = producer if producer is not None else make_producer(self.settings)
        self.codec = Codec(self.ctx.topics)
        self.outbox = Outbox(stage.name, declared, self.codec, self.metrics, self.log)
        self.feed = PartitionFeed(
            consumer, stage.name, self.settings.stage, self.metrics, self.log, self._partitions_assigned
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def request_stop(self) -> None:
        self._stopping.set()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)

    async def run(self, max_batches: int | None = None) -> None:
        current_stage.set(self.stage.name)
        self.metrics.serve(self.settings.stage.metrics_port)
        topics = [self.ctx.topics(t) for t in self.stage.inputs]
        self.feed.subscribe(topics)
        await self.stage.start()
        self.log.info("stage started", extra={"topic": ",".join(topics)})
        try:
            if self.stage.prefetch_batches > 0:
                await self._run_prefetching(max_batches)
            else:
                await self._run_in_turn(max_batches)
        finally:
            await self.stage.stop()
            self.producer.flush(10)
            self.feed.close()
            self.log.info("stage stopped")

    def _partitions_assigned(self, topic_name: str, partitions: list[int]) -> None:
        self.stage.partitions_assigned(self.ctx.topics.logical(topic_name), partitions)

    # -- the two loops -----------------------------------------------------------------------

    async def _run_in_turn(self, max_batches: int | None) -> None:
        """Poll, process, commit, repeat: the simplest loop, for CPU stages."""
        batches = 0
        while not self._stopping.is_set():
            if max_batches is not None and batches >= max_batches:
                break
            fetched = await self.feed.fetch()
            if fetched.messages:
                await self.process(fetched.messages)
                batches += 1

    async def _run_prefetching(self, max_batches: int | None) -> None:
        """Fetch the next batches while this one is processed (the GPU never waits on the broker);
        the feed pauses the partitions past `prefetch_batches` queued batches. Commits stay in
        batch order, after each batch's outputs are delivered."""
        queue = AheadQueue()
        fetcher = asyncio.create_task(
            self.feed.fetch_ahead(queue, self.stage.prefetch_batches, self._stopping)
        )
        finishing: asyncio.Task[None] | None = None
        batches = 0
        try:
            while not self._stopping.is_set():
                if max_batches is not None and batches >= max_batches:
                    break
                fetched = await queue.get(timeout_s=0.5)
                if fetched is None:
                    if fetcher.done():
                        fetcher.result()  # surface a poller crash
                    continue
                batch = self.feed.still_owned(fetched)
                if batch:
                    pendings = await self.prepare(batch)
                    # Batch N finishes (uploads, produce, commit) while batch N+1 is handled;
                    # one batch finishing at a time keeps commits in order.
                    if finishing is not None:
                        await finishing
                    finishing = asyncio.create_task(self.finish(batch, pendings))
                    batches += 1
        finally:
            self._stopping.set()
            # The poller first: once it is done nobody else touches the consumer, so finishing
            # (which commits) and close() cannot race it.
            fetch_error: BaseException | None = None
            try:
                await fetcher
            except Exception as exc:
                fetch_error = exc
            if finishing is not None:
                await finishing
            if fetch_error is not None:
                raise fetch_error

    # -- one batch ---------------------------------------------------------------------------

    async def process(self, messages: list[Message]) -> None:
        await self.finish(messages, await self.prepare(messages))

    async def prepare(self, messages: list[Message]) -> list[Pending]:
        """Decode and handle a batch: everything up to producing its outputs."""
        self.metrics.batch_size.labels(self.stage.name).observe(len(messages))
        pendings: list[Pending] = []
        records: list[InputRecord] = []
        slots: list[int] = []
        for message in messages:
            error = message.error()
            if error:
                if error.code() != KafkaError._PARTITION_EOF:
                    self.log.warning("consume error: %s", error)
                continue
            self.metrics.consumed.labels(self.stage.name).inc()
            try:
                records.append(self.codec.decode(message))
            except SerdeError as exc:
                pendings.append(self.outbox.undecodable(message, exc))
                continue
            slots.append(len(pendings))
            pendings.append(Pending())  # filled in once the record is handled

        if records:
            await self.stage.before_batch()
            if isinstance(self.stage, BatchStage):
                results = await self._handle_batch(self.stage, records)
            else:
                results = await asyncio.gather(*(self._handle_one(r) for r in records))
            for slot, pending in zip(slots, results, strict=True):
                pendings[slot] = pending
        return pendings

    async def finish(self, messages: list[Message], pendings: list[Pending]) -> None:
        """Wait for the batch's side effects, produce its outputs, wait for delivery, commit.
        A failed effect or delivery raises before anything is committed: the batch is redone."""
        effects = [effect for pending in pendings for effect in pending.effects]
        if effects:
            await asyncio.gather(*effects)
        await self.outbox.deliver(self.producer, pendings)
        await self.feed.commit(messages)
        await self.feed.record_lag()

    async def _handle_one(self, record: InputRecord) -> Pending:
        """One record through the retry loop; a permanent error or the last attempt dead-letters
        it, after the retry events it led to."""
        token = current_job_id.set(record.job_id)
        retries: list[Event] = []

        def on_retry(attempt: int, exc: BaseException, delay: float) -> None:
            reason = type(exc).__name__
            self.metrics.retries.labels(self.stage.name).inc()
            self.log.warning(
                "transient failure, retrying in %.2fs: %s",
                delay,
                exc,
                extra={"reason": reason, "attempt": attempt},
            )
            retries.append(
                Event(
                    record.job_id,
                    "retry",
                    reason=reason,
                    detail=str(exc)[:500],
                    discriminator=f"try{attempt}",
                )
            )

        try:
            result = await with_retries(
                lambda: self.stage.handle(record), self.policy, is_permanent=is_permanent, on_retry=on_retry
            )
            if isinstance(result, GaveUp):
                self.log.error(
                    "dead-lettering after %d attempt(s): %s",
                    result.attempts,
                    result.error,
                    extra={"reason": type(result.error).__name__, "attempt": result.attempts},
                    exc_info=result.error,
                )
                letter = self.outbox.letter_for(
                    record, result.error, result.attempts, result.first_failure_ms, result.last_failure_ms
                )
                return self.outbox.dead_letter(letter, record, before=retries)
            self.metrics.handler_seconds.labels(self.stage.name).observe(result.duration_ms / 1000)
            outcome = result.value
            outcome.events[:0] = retries
            return self.outbox.outcome(record, outcome, result.duration_ms)
        finally:
            current_job_id.reset(token)

    async def _handle_batch(self, stage: BatchStage, records: list[InputRecord]) -> list[Pending]:
        """The whole batch through the retry loop. Giving up raises: a whole batch failing means a
        dependency is down, not that every record is poison, so nothing is dead-lettered and
        nothing committed; a restart resumes. A record that fails on its own comes back as an
        Outcome with `dead_letter` set and is dead-lettered alone."""

        def on_retry(attempt: int, exc: BaseException, delay: float) -> None:
            self.metrics.retries.labels(self.stage.name).inc()
            self.log.warning(
                "batch failed, retrying in %.2fs: %s",
                delay,
                exc,
                extra={"reason": type(exc).__name__, "attempt": attempt},
            )

        result = await with_retries(
            lambda: stage.handle_batch(records), self.policy, is_permanent=lambda _: False, on_retry=on_retry
        )
        if isinstance(result, GaveUp):
            raise result.error
        per_record_ms = result.duration_ms / max(1, len(records))
        return [self.outbox.outcome(r, o, per_record_ms) for r, o in zip(records, result.value, strict=True)]
