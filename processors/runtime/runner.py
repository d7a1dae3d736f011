"""Consume-process-produce-commit for one stage, at least once.

Per batch: poll up to N records, decode each (undecodable → dead-letter at once), handle them
(retrying transient failures with backoff; exhausted or permanent → dead-letter), produce every
output, pipeline event and dead letter, wait for delivery, and only then commit the batch's offsets.
A crash anywhere before the commit replays the batch; handlers make that harmless with
deterministic keys and ids. SIGTERM finishes the batch in hand, commits, and leaves the group.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from processors.kafka_clients import group_id_for, make_consumer, make_producer
from processors.logs import current_job_id, current_stage
from processors.runtime.dlq import DeadLetter
from processors.runtime.errors import DeliveryError, backoff_delay, is_permanent
from processors.runtime.records import Event, InputRecord, Outcome
from processors.runtime.stage import BatchStage, Stage
from schemas.serde import AvroSerde, SerdeError
from schemas.topics import SCHEMA_OF, Topic

EVENT_NAMESPACE = uuid.UUID("6f1f7c52-3a0e-4c59-9a57-1d1f3f0c9b11")
WORKER = f"{socket.gethostname()}:{os.getpid()}"


def now_ms() -> int:
    return int(time.time() * 1000)


def to_millis(value: dt.datetime | int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return int(value.timestamp() * 1000)
    return int(value)


@dataclass
class Pending:
    """Everything one input record leads to, encoded and ready to produce."""

    record: InputRecord | None
    effects: list[Awaitable[Any]] = field(default_factory=list)
    messages: list[tuple[Topic, str, bytes, list[tuple[str, bytes]] | None, int | None]] = field(
        default_factory=list
    )


class StageRunner:
    def __init__(self, stage: Stage) -> None:
        self.stage = stage
        self.ctx = stage.ctx
        self.settings = stage.ctx.settings
        self.log = logging.getLogger(f"lightbox.runtime.{stage.name}")
        self.metrics = stage.ctx.metrics
        self._serdes: dict[str, AvroSerde] = {}
        self._stopping = asyncio.Event()
        # One dedicated thread for the blocking poll, so handlers' to_thread calls never wait on it.
        self._poll_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"poll-{stage.name}")
        self._delivery_errors: list[str] = []
        self._queue: deque[tuple[int, list[Message]]] = deque()
        self._paused = False
        self._assigned_while_paused = False
        self._fetch_seq = 0  # consume() calls so far; only the poll thread changes it
        self._revoked_at: dict[tuple[str, int], int] = {}
        self._revoked_lock = threading.Lock()
        self._committed: dict[tuple[str, int], int] = {}
        self.consumer = make_consumer(self.settings, group_id_for(self.settings, stage.name))
        self.producer = make_producer(self.settings)

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
        self.consumer.subscribe(topics, on_assign=self._on_assign, on_revoke=self._on_revoke)
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
            # close() commits nothing (auto-commit is off) and leaves the group promptly.
            self.consumer.close()
            self._poll_thread.shutdown(wait=False)
            self.log.info("stage stopped")

    async def _run_in_turn(self, max_batches: int | None) -> None:
        """Poll, process, commit, repeat: the simplest loop, for CPU stages."""
        batches = 0
        while not self._stopping.is_set():
            if max_batches is not None and batches >= max_batches:
                break
            messages = await self._poll()
            if messages:
                await self.process(messages)
                batches += 1

    async def _run_prefetching(self, max_batches: int | None) -> None:
        """Fetch the next batches while this one is processed (the GPU never waits on the broker),
        and apply backpressure: past `prefetch_batches` queued batches, pause every assigned
        partition (polling goes on, so the group keeps us); resume once the queue drains to half.
        Commits stay in batch order, after each batch's outputs are delivered."""
        high = self.stage.prefetch_batches
        low = max(0, high // 2)
        ready = asyncio.Event()

        async def fetch() -> None:
            while not self._stopping.is_set():
                messages = await self._poll()
                if messages:
                    self._queue.append((self._fetch_seq, messages))
                    ready.set()
                queued = len(self._queue)
                if (queued >= high and not self._paused) or (self._paused and self._assigned_while_paused):
                    # Also after a rebalance: newly assigned partitions must not run unpaused.
                    await self._on_poll_thread(self._pause)
                elif queued <= low and self._paused:
                    await self._on_poll_thread(self._resume)

        fetcher = asyncio.create_task(fetch())
        finishing: asyncio.Task[None] | None = None
        batches = 0
        try:
            while not self._stopping.is_set():
                if max_batches is not None and batches >= max_batches:
                    break
                if not self._queue:
                    ready.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(ready.wait(), timeout=0.5)
                    if fetcher.done():
                        fetcher.result()  # surface a poller crash
                    continue
                batch = self._still_owned(*self._queue.popleft())
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

    async def _on_poll_thread(self, func: Any) -> Any:
        # Every consumer call goes through the one poll thread: the client is not shared across threads.
        return await asyncio.get_running_loop().run_in_executor(self._poll_thread, func)

    def _pause(self) -> None:
        assignment = self.consumer.assignment()
        if assignment:
            self.consumer.pause(assignment)
        self._assigned_while_paused = False
        self._paused = True
        self.metrics.paused.labels(self.stage.name).inc()
        self.log.info("queue full (%d batches): paused %d partition(s)", len(self._queue), len(assignment))

    def _resume(self) -> None:
        assignment = self.consumer.assignment()
        if assignment:
            self.consumer.resume(assignment)
        self._paused = False
        self.log.info("queue drained: resumed %d partition(s)", len(assignment))

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        # Runs on the poll thread, inside the consume() of fetch number `_fetch_seq`: note when
        # each partition was revoked. Batches fetched before that are dropped unprocessed and
        # uncommitted: whoever owns the partition now reads them again (nothing is lost), and
        # batches fetched later (after a re-assignment) are processed as usual.
        with self._revoked_lock:
            for tp in partitions:
                self._revoked_at[(tp.topic, tp.partition)] = self._fetch_seq

    def _still_owned(self, seq: int, batch: list[Message]) -> list[Message]:
        with self._revoked_lock:
            revoked_at = dict(self._revoked_at)
        if not revoked_at:
            return batch
        return [m for m in batch if revoked_at.get((m.topic(), m.partition()), 0) <= seq]

    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        if self._paused:
            self._assigned_while_paused = True
        by_topic: dict[str, list[int]] = {}
        for tp in partitions:
            by_topic.setdefault(tp.topic, []).append(tp.partition)
        for name, numbers in by_topic.items():
            self.stage.partitions_assigned(self.ctx.topics.logical(name), numbers)

    async def _poll(self) -> list[Message]:
        loop = asyncio.get_running_loop()
        cfg = self.settings.stage
        return await loop.run_in_executor(
            self._poll_thread, lambda: self._consume_batch(cfg.batch_size, cfg.batch_timeout_s)
        )

    def _consume_batch(self, size: int, timeout_s: float) -> list[Message]:
        """Wait for the first message only, then take whatever else is already fetched.

        consume(n, timeout) alone waits the full timeout unless n messages are ready, adding that
        wait to every hop of a lightly loaded pipeline; under load batches still fill up.
        """
        self._fetch_seq += 1
        first = self.consumer.consume(1, timeout_s)
        if not first or size <= 1:
            return first
        return first + self.consumer.consume(size - 1, 0)

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
            if message.error():
                if message.error().code() != KafkaError._PARTITION_EOF:
                    self.log.warning("consume error: %s", message.error())
                continue
            self.metrics.consumed.labels(self.stage.name).inc()
            try:
                records.append(self._decode(message))
                slots.append(len(pendings))
                pendings.append(Pending(None))
            except SerdeError as exc:
                pendings.append(self._dead_letter_raw(message, exc, 1, now_ms(), now_ms()))

        if records:
            await self.stage.before_batch()
            if isinstance(self.stage, BatchStage):
                results = await self._handle_batch(records)
            else:
                results = await asyncio.gather(*(self._handle_one(r) for r in records))
            for slot, pending in zip(slots, results, strict=True):
                pendings[slot] = pending
        return pendings

    async def finish(self, messages: list[Message], pendings: list[Pending]) -> None:
        """Wait for the batch's side effects, produce its outputs, wait for delivery, commit.
        A failed effect raises before anything is produced or committed: the batch is redone."""
        effects = [effect for pending in pendings for effect in pending.effects]
        if effects:
            await asyncio.gather(*effects)
        self._produce(pendings)
        await self._flush()
        await self._on_poll_thread(lambda: self._commit(messages))
        await self._on_poll_thread(self._record_lag)

    def _decode(self, message: Message) -> InputRecord:
        topic = self.ctx.topics.logical(message.topic())
        value = self._serde(SCHEMA_OF[topic]).decode(message.value())
        return InputRecord(
            topic=topic,
            partition=message.partition(),
            offset=message.offset(),
            key=message.key(),
            value=value,
            raw_value=message.value(),
            headers=list(message.headers() or []),
            timestamp_ms=message.timestamp()[1],
        )

    async def _handle_one(self, record: InputRecord) -> Pending:
        token = current_job_id.set(record.job_id)
        first_failure: int | None = None
        retry_events: list[Event] = []
        attempt = 0
        try:
            while True:
                attempt += 1
                started = time.perf_counter()
                try:
                    outcome = await self.stage.handle(record)
                    duration_ms = (time.perf_counter() - started) * 1000
                    self.metrics.handler_seconds.labels(self.stage.name).observe(duration_ms / 1000)
                    outcome.events[:0] = retry_events
                    return self._encode(record, outcome, duration_ms)
                except Exception as exc:
                    failed_at = now_ms()
                    first_failure = first_failure or failed_at
                    reason = type(exc).__name__
                    if is_permanent(exc) or attempt >= self.settings.stage.max_attempts:
                        self.log.error(
                            "dead-lettering after %d attempt(s): %s",
                            attempt,
                            exc,
                            extra={"reason": reason, "attempt": attempt},
                            exc_info=exc,
                        )
                        pending = self._dead_letter_record(record, exc, attempt, first_failure, failed_at)
                        pending.messages[:0] = self._encode_events(retry_events, record, 0.0)
                        return pending
                    delay = backoff_delay(
                        attempt, self.settings.stage.backoff_initial_s, self.settings.stage.backoff_max_s
                    )
                    self.metrics.retries.labels(self.stage.name).inc()
                    self.log.warning(
                        "transient failure, retrying in %.2fs: %s",
                        delay,
                        exc,
                        extra={"reason": reason, "attempt": attempt},
                    )
                    retry_events.append(
                        Event(
                            record.job_id,
                            "retry",
                            reason=reason,
                            detail=str(exc)[:500],
                            discriminator=f"try{attempt}",
                        )
                    )
                    await asyncio.sleep(delay)
        finally:
            current_job_id.reset(token)

    async def _handle_batch(self, records: list[InputRecord]) -> list[Pending]:
        assert isinstance(self.stage, BatchStage)
        attempt = 0
        while True:
            attempt += 1
            started = time.perf_counter()
            try:
                outcomes = await self.stage.handle_batch(records)
                break
            except Exception as exc:
                if attempt >= self.settings.stage.max_attempts:
                    # Not dead-lettered: a whole batch failing means a dependency is down, not
                    # that every record is poison. Crash without committing; a restart resumes.
                    raise
                delay = backoff_delay(
                    attempt, self.settings.stage.backoff_initial_s, self.settings.stage.backoff_max_s
                )
                self.metrics.retries.labels(self.stage.name).inc()
                self.log.warning(
                    "batch failed, retrying in %.2fs: %s",
                    delay,
                    exc,
                    extra={"reason": type(exc).__name__, "attempt": attempt},
                )
                await asyncio.sleep(delay)
        per_record_ms = (time.perf_counter() - started) * 1000 / max(1, len(records))
        return [self._encode(r, o, per_record_ms) for r, o in zip(records, outcomes, strict=True)]

    # -- encoding ----------------------------------------------------------------------------

    def _serde(self, schema: str) -> AvroSerde:
        if schema not in self._serdes:
            self._serdes[schema] = AvroSerde(schema)
        return self._serdes[schema]

    def _encode(self, record: InputRecord, outcome: Outcome, duration_ms: float) -> Pending:
        if outcome.dead_letter is not None:
            at = now_ms()
            pending = self._dead_letter_record(record, outcome.dead_letter, outcome.attempts, at, at)
            pending.messages[:0] = self._encode_events(outcome.events, record, duration_ms)
            pending.effects = list(outcome.effects)
            return pending
        pending = Pending(record, effects=list(outcome.effects))
        try:
            for output in outcome.outputs:
                value = self._serde(SCHEMA_OF[output.topic]).encode(output.value)
                pending.messages.append((output.topic, output.key, value, None, output.partition))
        except SerdeError as exc:
            # The handler built an invalid record: a bug on this input, so it is poison.
            return self._dead_letter_record(record, exc, 1, now_ms(), now_ms())
        pending.messages.extend(self._encode_events(outcome.events, record, duration_ms))
        return pending

    def _encode_events(
        self, events: list[Event], record: InputRecord | None, duration_ms: float
    ) -> list[tuple[Topic, str, bytes, None, None]]:
        serde = self._serde("pipeline_event")
        encoded = []
        source = f"{record.topic.value}/{record.partition}/{record.offset}" if record is not None else ""
        for event in events:
            # The input message is part of the identity: a replayed batch re-reads the same offsets
            # and re-emits the same ids (de-duplicated in ClickHouse), while a new message about the
            # same job (a DLQ replay, a second decision, a resubmission) is a new event.
            identity = "|".join(
                [
                    event.job_id,
                    self.stage.name,
                    event.state,
                    str(event.attempt),
                    event.reason,
                    event.discriminator,
                    source,
                ]
            )
            attributes = dict(event.attributes)
            if source:
                attributes.setdefault("source", source)
            value = {
                "event_id": str(uuid.uuid5(EVENT_NAMESPACE, identity)),
                "job_id": event.job_id,
                "stage": self.stage.name,
                "state": event.state,
                "at": now_ms(),
                "duration_ms": float(duration_ms),
                "reason": event.reason,
                "detail": event.detail[:2000],
                "attempt": event.attempt,
                "attributes": attributes,
                "submitted_at": to_millis(event.submitted_at),
                "worker": WORKER,
            }
            encoded.append((Topic.PIPELINE_EVENTS, event.job_id, serde.encode(value), None, None))
        return encoded

    def _dead_letter_record(
        self, record: InputRecord, exc: BaseException, attempts: int, first: int, last: int
    ) -> Pending:
        source = (
            self.ctx.topics(record.topic),
            record.partition,
            record.offset,
            record.key,
            record.raw_value,
        )
        return self._dead_letter(self._letter(source, exc, attempts, first, last), record)

    def _dead_letter_raw(
        self, message: Message, exc: BaseException, attempts: int, first: int, last: int
    ) -> Pending:
        source = (message.topic(), message.partition(), message.offset(), message.key(), message.value())
        letter = self._letter(source, exc, attempts, first, last)
        self.log.error(
            "dead-lettering undecodable message: %s",
            exc,
            extra={
                "reason": letter.error_class,
                "topic": letter.original_topic,
                "partition": letter.original_partition,
                "offset": letter.original_offset,
            },
        )
        return self._dead_letter(letter, None)

    def _letter(
        self,
        source: tuple[str, int, int, bytes | None, bytes | None],
        exc: BaseException,
        attempts: int,
        first: int,
        last: int,
    ) -> DeadLetter:
        topic, partition, offset, key, value = source
        return DeadLetter(
            original_topic=topic,
            original_partition=partition,
            original_offset=offset,
            original_key=key,
            original_value=value,
            stage=self.stage.name,
            error_class=type(exc).__name__,
            error_message=str(exc),
            attempts=attempts,
            first_failure_at=first,
            last_failure_at=last,
        )

    def _dead_letter(self, letter: DeadLetter, record: InputRecord | None) -> Pending:
        self.metrics.dead_lettered.labels(self.stage.name).inc()
        self.metrics.failures.labels(self.stage.name, letter.error_class).inc()
        key = (letter.original_key or b"").decode("utf-8", "replace")
        job_id = (
            record.job_id
            if record
            else key or f"{letter.original_topic}/{letter.original_partition}/{letter.original_offset}"
        )
        value = self._serde("dlq_envelope").encode(letter.record())
        event = Event(
            job_id,
            "dead_lettered",
            reason=letter.error_class,
            detail=letter.error_message[:500],
            attributes={
                "dlq_source": f"{letter.original_topic}/{letter.original_partition}/{letter.original_offset}",
                "attempts": str(letter.attempts),
            },
        )
        pending = Pending(record, messages=[(Topic.PIPELINE_DLQ, key, value, letter.headers(), None)])
        pending.messages.extend(self._encode_events([event], record, 0.0))
        return pending

    # -- produce and commit ------------------------------------------------------------------

    def _on_delivery(self, err: Any, msg: Message) -> None:
        if err is not None:
            self._delivery_errors.append(f"{msg.topic()}: {err}")

    def _produce(self, pendings: list[Pending]) -> None:
        for pending in pendings:
            for topic, key, value, headers, partition in pending.messages:
                name = self.ctx.topics(topic)
                extra = {} if partition is None else {"partition": partition}
                while True:
                    try:
                        self.producer.produce(
                            name,
                            value=value,
                            key=key.encode(),
                            headers=headers,
                            on_delivery=self._on_delivery,
                            **extra,
                        )
                        break
                    except BufferError:
                        # Local queue full: serve delivery reports to make room, then retry.
                        self.producer.poll(0.1)
                self.metrics.produced.labels(self.stage.name, topic.value).inc()

    async def _flush(self) -> None:
        remaining = await asyncio.to_thread(self.producer.flush, 30)
        if remaining or self._delivery_errors:
            errors, self._delivery_errors = self._delivery_errors, []
            raise DeliveryError(f"{remaining} message(s) undelivered; errors: {'; '.join(errors[:5])}")

    def _record_lag(self) -> None:
        """Consumer lag per assigned partition, from the watermarks the fetcher already has."""
        assignment = self.consumer.assignment()
        if not assignment:
            return
        for tp in self.consumer.position(assignment):
            if tp.offset < 0:
                continue
            _, high = self.consumer.get_watermark_offsets(tp, cached=True)
            if high >= 0:
                label = f"{tp.topic}/{tp.partition}"
                self.metrics.lag.labels(self.stage.name, label).set(max(0, high - tp.offset))

    def _commit(self, messages: list[Message]) -> None:
        offsets: dict[tuple[str, int], int] = {}
        for m in messages:
            if m.error():
                continue
            key = (m.topic(), m.partition())
            offsets[key] = max(offsets.get(key, -1), m.offset() + 1)
        # Never move a partition's commit backwards (a batch re-fetched after a rebalance can
        # trail one already committed): that would only cause work to be redone.
        offsets = {k: o for k, o in offsets.items() if o > self._committed.get(k, -1)}
        if not offsets:
            return
        try:
            results = self.consumer.commit(
                offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=False
            )
        except KafkaException as exc:
            # A rebalance took a partition away mid-batch: its new owner re-reads from the last
            # commit and, keys being deterministic, redoes the same effects. Nothing is lost.
            self.log.warning("commit after a rebalance failed; the new owner will redo: %s", exc)
            return
        for tp in results or []:
            if tp.error is not None:
                self.log.warning(
                    "commit of %s/%d failed; that batch will be redone: %s", tp.topic, tp.partition, tp.error
                )
            else:
                self._committed[(tp.topic, tp.partition)] = tp.offset
