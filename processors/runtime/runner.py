"""Consume-process-produce-commit for one stage, exactly once on the topics: the spine.

Per batch: the feed polls up to N records; prepare() decodes each (undecodable: dead-lettered at
once) and settles them through the one retry loop (retry.py: a record's own fault is
dead-lettered, a dependency outage holds the partitions and retries for as long as it takes); the
outbox encodes and size-checks every output, pipeline event and dead letter; finish() waits for
the batch's side effects (a failed one redoes its record through the same loop), produces
everything (a record the broker refuses dead-letters its input; a broker that is down holds and
waits), and only then commits the batch's offsets. With kafka.exactly_once (the default) the
produce and the commit are one Kafka transaction per batch (transact.py): a crash before it
commits leaves none of the batch's outputs visible to read_committed readers, and the batch is
redone once. Without it (delivery.py, then commits.py) a crash before the commit replays the
batch and its outputs appear twice on the topics; handlers make that harmless for their own
effects with deterministic keys and ids. SIGTERM finishes the batch in hand, commits, and leaves
the group (during an outage: leaves it uncommitted, for whoever owns the partitions next).

Two loops: in turn (poll, process, commit: the CPU stages) and prefetching (the GPU worker: the
next batches are fetched and handled while the last one's uploads, produce and commit finish).
A batch in hand longer than stage.keepalive_after_s holds the partitions and keeps polling, so the
group's max.poll.interval never runs out (the prefetching loop polls all along).

The parts, one concern each:
    feed.py      the consumer on its poll thread: batches, fetch-ahead and holds (pause, keep
                 polling, resume), revokes, offset gaps, commits (commits.py) and lag
    codec.py     bytes to InputRecord and back
    errors.py    whose fault a failure is: the one classification every stage's errors go through
    retry.py     the one retry loop, for Stage and BatchStage alike, and the outage rule
    outage.py    holding the partitions while a dependency is down, and saying so
    outbox.py    encoding and checking outcomes, events (deterministic ids) and dead letters
    sizes.py     message size limits and bounded texts
    delivery.py  produce and confirm, refusals dead-lettered, a broker outage waited out
    transact.py  the same inside one transaction per batch, with the input offsets (exactly once)
    dlq.py       the dead letter: its envelope, headers, offloaded original and event
    memory.py    an in-memory broker, consumer, producer and store, to run all of this without Kafka

The consumer and producer are confluent-kafka's by default; pass others (memory.py's) to test.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, Message

from processors.kafka_clients import (
    DeliveryFailed,
    group_id_for,
    make_consumer,
    make_producer,
    make_share_consumer,
    make_transactional_producer,
    prepare_share_group,
    produce_and_confirm,
    topic_message_limits,
)
from processors.logs import current_job_id, current_stage
from processors.runtime.codec import Codec, serde_factory
from processors.runtime.delivery import Deliverer
from processors.runtime.errors import Fault, classify
from processors.runtime.feed import AheadQueue, Fetched, PartitionFeed
from processors.runtime.outage import BatchWatch, Outage
from processors.runtime.outbox import Outbox, Pending
from processors.runtime.records import Event, InputRecord, Outcome
from processors.runtime.retry import RetryPolicy, Settled, StopRequested, Tried, elapsed_ms, settle
from processors.runtime.share_feed import RedeliveredTooOften, ShareFeed
from processors.runtime.sizes import MessageLimits
from processors.runtime.stage import BatchStage, Stage
from processors.runtime.transact import TransactionalDeliverer, TransactionFatal, Transactions
from schemas.registry_client import RegistryUnavailableError
from schemas.serde import SerdeError
from schemas.topics import RUNTIME_TOPICS

# How long stopping waits for retry events still being sent.
EVENTS_DRAIN_S = 5.0


class StageRunner:
    def __init__(
        self,
        stage: Stage,
        consumer: Any | None = None,
        producer: Any | None = None,
        limits: MessageLimits | None = None,
        transactional: bool | None = None,
        events_producer: Any | None = None,
        renew_producer: Callable[[], Any] | None = None,
    ) -> None:
        """`transactional`: outputs and offsets in one transaction per batch; None: as
        kafka.exactly_once says for a producer of our own, off for one passed in (unless it says
        `transactional`). `events_producer`: what retry events go out through at once, outside
        any batch (a transactional producer cannot send outside a transaction); by default the
        producer itself, or a plain one of our own when that one is transactional.
        `renew_producer`: a new transactional producer (the same transactional.id) for one that is
        stuck; by default made the way ours is, and none for a producer passed in (stuck: the stage
        stops)."""
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
        # The broker's per-topic limits are read at start only for a real producer of our own.
        self._learn_limits = producer is None and limits is None
        # A share group (the generate stage, generation.consumption=share) has no offsets to put
        # in a transaction: its outputs are delivered, then each record acknowledged.
        self.shared = stage.consumption() == "share"
        group_id = group_id_for(self.settings, stage.name)
        if consumer is None:
            make = make_share_consumer if self.shared else make_consumer
            consumer = make(self.settings, group_id, **stage.consumer_overrides())
        self.consumer = consumer
        if self.shared:
            transactional = False
        if transactional is None:
            transactional = (
                self.settings.kafka.exactly_once
                if producer is None
                else bool(getattr(producer, "transactional", False))
            )
        self.exactly_once = transactional
        # The transactions own the producer: a stuck one is replaced there (transact.py).
        self.txn = Transactions(producer, self.settings.stage, self.policy, self.log, renew_producer)
        if producer is None:
            if transactional:
                self.txn.renew_with(
                    functools.partial(
                        make_transactional_producer, self.settings, stage.name, error_cb=self.txn.on_error
                    )
                )
            else:
                self.txn.producer = make_producer(self.settings)
        producer = self.txn.producer
        if events_producer is None:
            events_producer = make_producer(self.settings) if transactional else producer
        self.events_producer = events_producer
        self.codec = Codec(self.ctx.topics, serde_factory(self.settings))
        self.limits = limits or MessageLimits(self.settings.stage.max_message_bytes)
        self.outbox = Outbox(
            stage.name,
            declared,
            self.codec,
            self.metrics,
            self.log,
            self.limits,
            self.settings.storage.bucket,
        )
        self.feed: PartitionFeed | ShareFeed
        if self.shared:
            self.feed = ShareFeed(
                consumer,
                stage.name,
                stage.stage_settings(),
                self.metrics,
                self.log,
                self.settings.generation.share_max_deliveries,
                functools.partial(prepare_share_group, self.settings, group_id),
            )
        else:
            self.feed = PartitionFeed(
                consumer,
                stage.name,
                stage.stage_settings(),
                self.metrics,
                self.log,
                self._partitions_assigned,
                self._partitions_revoked,
            )
        self.deliverer = Deliverer(
            self.outbox,
            lambda: self.ctx.store,
            self.policy,
            self.settings.stage,
            self.metrics,
            self.log,
            stage.name,
        )
        self.txn_deliverer = TransactionalDeliverer(
            self.deliverer, self.txn, self.feed, self.settings.stage, self.metrics, self.log, stage.name
        )
        # One handler call at a time: a batch redone in finish() must not overlap the next
        # batch's handling (the prefetching loop handles N+1 while N finishes).
        self._handling = asyncio.Lock()
        self._sending: set[asyncio.Task[None]] = set()

    @property
    def producer(self) -> Any:
        return self.txn.producer

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
        if self._learn_limits:
            await self._read_broker_limits()
        if self.exactly_once:
            # Before joining the group: a predecessor's open transaction is aborted first, so its
            # offsets (pending in it) never hold up this consumer's first fetch.
            try:
                await self.txn.init(self._stopping)
            except StopRequested:
                self.feed.close()
                return
            except BaseException:
                self.feed.close()
                raise
        started = False
        try:
            # Inside the try: a subscribe or start() that raises must still close the consumer
            # (its threads would keep the process from exiting) and flush the producer.
            await self._resolve_writers()
            self.feed.subscribe(topics)
            await self.stage.start()
            started = True
            self.log.info("stage started", extra={"topic": ",".join(topics)})
            if self.stage.prefetch_batches > 0 and not self.shared:
                await self._run_prefetching(max_batches)
            else:
                await self._run_in_turn(max_batches)
        except StopRequested as exc:
            self.log.warning("%s: the batch in hand is left uncommitted, to be redone", exc)
        except TransactionFatal as exc:
            # Fenced (a newer copy with this transactional.id) or a broken producer: going on
            # would only fail again. Exit, uncommitted; the supervisor starts a fresh producer.
            self.log.error("transactional producer cannot go on, stopping the stage: %s", exc)
            raise
        finally:
            try:
                if started:
                    await self.stage.stop()
                await self._drain_events()
            finally:
                self.producer.flush(10)
                if self.events_producer is not self.producer:
                    self.events_producer.flush(10)
                self.feed.close()
                self.log.info("stage stopped")

    async def _resolve_writers(self) -> None:
        """The output topics' writer schemas, looked up before the first batch (Codec.resolve_writers).
        A registry that does not answer costs one topic's lookup timeout here (the first failure
        ends the warm-up), then the stage starts anyway."""
        topics = sorted({*self.outbox.declared, *RUNTIME_TOPICS}, key=lambda t: t.value)
        try:
            await asyncio.to_thread(self.codec.resolve_writers, topics)
        except (RegistryUnavailableError, SerdeError) as exc:
            # Not fatal here: the first encode asks again, and a registry still down then is an
            # outage the batch waits out (retry.py), as at any other time.
            self.log.warning("could not resolve the output schemas at start: %s", exc)

    async def _read_broker_limits(self) -> None:
        names = [self.ctx.topics(t) for t in {*self.outbox.declared, *RUNTIME_TOPICS}]
        try:
            found = await asyncio.to_thread(topic_message_limits, self.settings, names)
        except Exception as exc:  # the broker not up yet: the producer's limit still applies
            self.log.warning("could not read the topics' max.message.bytes: %s", exc)
            return
        self.limits.learn(found)

    def _partitions_assigned(self, topic_name: str, partitions: list[int]) -> None:
        self.stage.partitions_assigned(self.ctx.topics.logical(topic_name), partitions)

    def _partitions_revoked(self, topic_name: str, partitions: list[int]) -> None:
        self.stage.partitions_revoked(self.ctx.topics.logical(topic_name), partitions)

    # -- the two loops -----------------------------------------------------------------------

    async def _run_in_turn(self, max_batches: int | None) -> None:
        """Poll, process, commit, repeat: the simplest loop, for CPU stages."""
        batches = 0
        while not self._stopping.is_set():
            if max_batches is not None and batches >= max_batches:
                break
            fetched = await self.feed.fetch()
            if fetched.messages:
                async with self.feed.held_after(self.settings.stage.keepalive_after_s):
                    pendings = await self.prepare(fetched.messages)
                    # A partition revoked while the batch was in hand (a long outage) is its new
                    # owner's: what was handled for it is dropped, uncommitted.
                    owned = self.feed.still_owned(fetched)
                    if len(owned) != len(fetched.messages):
                        pendings = self._only_owned(owned, pendings)
                    await self.finish(owned, pendings, fetched.seq)
                batches += 1
            else:
                await self.feed.commit_past_markers()

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
                    if finishing is not None and finishing.done():
                        finishing.result()  # surface a stop during an outage
                    if finishing is None or finishing.done():
                        await self.feed.commit_past_markers()
                    continue
                batch = self.feed.still_owned(fetched)
                if batch:
                    pendings = await self.prepare(batch)
                    # Batch N finishes (uploads, produce, commit) while batch N+1 is handled;
                    # one batch finishing at a time keeps commits in order.
                    if finishing is not None:
                        await finishing
                    finishing = asyncio.create_task(self.finish(batch, pendings, fetched.seq))
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

    def _only_owned(self, owned: list[Message], pendings: list[Pending]) -> list[Pending]:
        kept = {(m.topic(), m.partition(), m.offset()) for m in owned}
        return [
            p
            for p in pendings
            if p.record is None
            or (self.ctx.topics(p.record.topic), p.record.partition, p.record.offset) in kept
        ]

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
                records.append(await self._decode(message))
            except SerdeError as exc:
                pendings.append(self.outbox.undecodable(message, exc))
                continue
            deliveries = self.feed.over_limit(message)
            if deliveries is not None:
                pendings.append(self._redelivered_too_often(records.pop(), deliveries))
                continue
            slots.append(len(pendings))
            pendings.append(Pending())  # filled in once the record is handled

        if records:
            await self._before_batch()
            # The prefetching loop lets effects (uploads) run on while the next batch is handled;
            # in turn, they are part of each attempt, so a failed upload is retried like a failed
            # handler call.
            results = await self._settle(records, inline_effects=self.stage.prefetch_batches <= 0)
            for slot, pending in zip(slots, results, strict=True):
                pendings[slot] = pending
        pendings.extend(self.outbox.gap(gap) for gap in self.feed.take_gaps())
        return pendings

    async def finish(self, messages: list[Message], pendings: list[Pending], seq: int | None = None) -> None:
        """Wait for the batch's side effects, produce its outputs, wait for delivery, commit.
        Nothing is committed before every output was delivered (or its input dead-lettered).
        Exactly once, outputs and offsets commit together (transact.py); `seq`, the fetch the
        batch came from, tells which of its partitions are still ours if that must be redone."""
        pendings = await self._settle_effects(pendings)
        await self._drain_events()  # this batch's retry events before its outcomes
        outage = self._outage()
        try:
            if self.exactly_once:
                await self.txn_deliverer.deliver(lambda: self._still_owned(messages, pendings, seq), outage)
            else:
                await self.deliverer.deliver(self.producer, pendings, outage)
        finally:
            await outage.release()
        if not self.exactly_once:
            await self.feed.commit(messages)
        await self.feed.record_lag()

    def _still_owned(
        self, messages: list[Message], pendings: list[Pending], seq: int | None
    ) -> tuple[list[Message], list[Pending]]:
        if seq is None:
            return messages, pendings
        owned = self.feed.still_owned(Fetched(seq, messages))
        if len(owned) == len(messages):
            return messages, pendings
        return owned, self._only_owned(owned, pendings)

    # -- settling records ----------------------------------------------------------------------

    def _outage(self) -> Outage:
        return Outage(
            self.feed,
            self.metrics,
            self.log,
            self.stage.name,
            self.settings.stage.outage_event_interval_s,
            self._stopping,
        )

    async def _decode(self, message: Message) -> InputRecord:
        """The message's record. A registry that cannot answer (writer schema not cached yet) is
        an outage like a handler's: the partitions are held and the decode retried until it
        answers; the message is fine, so it is never dead-lettered for it."""
        outage = self._outage()
        round_ = 0
        try:
            while True:
                try:
                    return self.codec.decode(message)
                except RegistryUnavailableError as exc:
                    round_ += 1
                    delay = self.policy.delay(round_)
                    await outage.hold(f"schema registry: {exc}")
                    self.log.warning("schema registry unavailable, retrying in %.2fs: %s", delay, exc)
                    await outage.wait(delay)
        finally:
            await outage.release()

    async def _before_batch(self) -> None:
        outage = self._outage()
        round_ = 0
        try:
            while True:
                try:
                    await self.stage.before_batch()
                    return
                except Exception as exc:
                    if classify(exc) is not Fault.DEPENDENCY:
                        raise
                    round_ += 1
                    delay = self.policy.delay(round_)
                    await outage.hold(f"before_batch: {exc}")
                    self.log.warning("before_batch failed, retrying in %.2fs: %s", delay, exc)
                    await outage.wait(delay)
        finally:
            await outage.release()

    async def _settle(self, records: list[InputRecord], inline_effects: bool) -> list[Pending]:
        """Records through the retry loop, to one Pending each."""
        outage = self._outage()
        watch = BatchWatch(outage, self._emit, self.metrics, self.log, self.stage.name, self._discard)
        if isinstance(self.stage, BatchStage):
            stage = self.stage

            async def run_round(subset: list[InputRecord]) -> list[Tried[Outcome]]:
                return await self._try_batch(stage, subset, inline_effects)
        else:

            async def run_round(subset: list[InputRecord]) -> list[Tried[Outcome]]:
                return list(await asyncio.gather(*(self._try_one(r, inline_effects) for r in subset)))

        try:
            async with self._handling:
                results = await settle(records, run_round, self.policy, watch)
        finally:
            await outage.release()
        return [self._pending_for(record, result) for record, result in zip(records, results, strict=True)]

    def _pending_for(self, record: InputRecord, result: Settled[Outcome]) -> Pending:
        if result.error is None:
            assert result.value is not None
            self.metrics.handler_seconds.labels(self.stage.name).observe(result.duration_ms / 1000)
            return self.outbox.outcome(record, result.value, result.duration_ms)
        if result.value is not None:  # the batch handler's own give-up, with its events
            return self.outbox.outcome(record, result.value, result.duration_ms)
        token = current_job_id.set(record.job_id)
        try:
            self.log.error(
                "dead-lettering after %d attempt(s): %s",
                result.attempts,
                result.error,
                extra={"reason": type(result.error).__name__, "attempt": result.attempts},
                exc_info=result.error,
            )
        finally:
            current_job_id.reset(token)
        letter = self.outbox.letter_for(
            record,
            result.error,
            result.attempts,
            result.first_failure_ms or 0,
            result.last_failure_ms or 0,
            # A dependency error dead-lettered here kept failing while others succeeded: its own.
            "unknown" if result.fault is Fault.UNKNOWN else "record",
        )
        return self.outbox.dead_letter(letter, record)

    def _redelivered_too_often(self, record: InputRecord, deliveries: int) -> Pending:
        """A share group's record whose workers kept dying on it (or holding it past its lock):
        dead-lettered unprocessed, so it cannot take down yet another worker."""
        error = RedeliveredTooOften(deliveries, self.settings.generation.share_max_deliveries)
        token = current_job_id.set(record.job_id)
        try:
            self.log.error("dead-lettering: %s", error, extra={"reason": error.reason, "attempt": deliveries})
        finally:
            current_job_id.reset(token)
        at = int(time.time() * 1000)
        return self.outbox.dead_letter(self.outbox.letter_for(record, error, deliveries, at, at), record)

    async def _try_one(self, record: InputRecord, inline_effects: bool) -> Tried[Outcome]:
        token = current_job_id.set(record.job_id)
        started = _now()
        try:
            outcome = await self.stage.handle(record)
            if inline_effects:
                await _await_effects(outcome)
        except Exception as exc:
            return Tried(error=exc)
        finally:
            current_job_id.reset(token)
        return Tried(outcome, duration_ms=elapsed_ms(started))

    async def _try_batch(
        self, stage: BatchStage, records: list[InputRecord], inline_effects: bool
    ) -> list[Tried[Outcome]]:
        """The batch handler on these records. A whole-batch failure that is not a dependency's
        is split in halves, to find the records it is about; a dependency's fails them all."""
        started = _now()
        try:
            outcomes = await stage.handle_batch(records)
            if len(outcomes) != len(records):
                raise RuntimeError(
                    f"handle_batch returned {len(outcomes)} outcomes for {len(records)} records"
                )
        except Exception as exc:
            if len(records) > 1 and classify(exc) is not Fault.DEPENDENCY:
                self.log.warning("batch of %d failed (%s): splitting it to find the cause", len(records), exc)
                middle = len(records) // 2
                return [
                    *await self._try_batch(stage, records[:middle], inline_effects),
                    *await self._try_batch(stage, records[middle:], inline_effects),
                ]
            return [Tried(error=exc) for _ in records]
        per_record_ms = elapsed_ms(started) / max(1, len(records))
        tried: list[Tried[Outcome]] = []
        for outcome in outcomes:
            if outcome.dead_letter is not None:
                tried.append(Tried(outcome, outcome.dead_letter, gave_up=True, duration_ms=per_record_ms))
                continue
            if inline_effects:
                try:
                    await _await_effects(outcome)
                except Exception as exc:
                    tried.append(Tried(error=exc))
                    continue
            tried.append(Tried(outcome, duration_ms=per_record_ms))
        return tried

    async def _settle_effects(self, pendings: list[Pending]) -> list[Pending]:
        """Await the batch's side effects (the prefetching loop's uploads); the records whose
        effects failed are redone through the retry loop, effects awaited in each attempt."""
        waiting = [p for p in pendings if p.effects]
        if not waiting:
            return pendings
        failed: list[int] = []
        for index, pending in enumerate(pendings):
            if not pending.effects:
                continue
            effects, pending.effects = pending.effects, []
            errors = [
                r
                for r in await asyncio.gather(*effects, return_exceptions=True)
                if isinstance(r, BaseException)
            ]
            for error in errors:
                if not isinstance(error, Exception):
                    raise error
            if errors:
                self.log.warning("side effect failed, redoing its record: %s", errors[0])
                if pending.record is not None:
                    failed.append(index)
        if not failed:
            return pendings
        redone = await self._settle([r for i in failed if (r := pendings[i].record) is not None], True)
        result = list(pendings)
        for index, pending in zip(failed, redone, strict=True):
            result[index] = pending
        return result

    async def _discard(self, outcome: Outcome) -> None:
        """A result the retry loop drops: its effects still run to the end (never orphaned)."""
        with contextlib.suppress(Exception):
            await _await_effects(outcome)

    # -- events sent at once -----------------------------------------------------------------

    def _emit(self, events: list[tuple[Event, InputRecord | None]]) -> None:
        """Retry events go out now, not with the batch: a batch waiting on an outage must not be
        silent. Sent in the background (the broker may be the outage); finish() and stopping wait
        for them."""
        messages = [m for event, record in events for m in self.outbox.events([event], record, 0.0)]
        if not messages:
            return
        task = asyncio.create_task(asyncio.to_thread(self._send_now, messages))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    def _send_now(self, messages: list[Any]) -> None:
        try:
            produce_and_confirm(self.events_producer, messages, self.settings.stage.delivery_timeout_s)
        except DeliveryFailed as exc:
            self.log.warning("retry events not delivered: %s", exc)

    async def _drain_events(self) -> None:
        if self._sending:
            await asyncio.wait(list(self._sending), timeout=EVENTS_DRAIN_S)


async def _await_effects(outcome: Outcome) -> None:
    """Every effect to the end; the first failure raised after all of them finished."""
    effects, outcome.effects = outcome.effects, []
    if not effects:
        return
    results = await asyncio.gather(*effects, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


def _now() -> float:
    return time.perf_counter()
