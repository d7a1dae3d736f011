"""Exactly once: a batch's outputs, events, dead letters and input offsets in one Kafka transaction.

Per batch (never per record: a transaction costs a few broker round trips, shared by the batch):
begin, produce everything the batch led to, wait for every delivery report, add the input
offsets with the consumer's group metadata (send_offsets_to_transaction), commit. A read_committed
reader sees all of it or none of it, and the offsets move only with it, so a stage killed between
producing and committing leaves nothing visible: its successor reads the same inputs again and
produces their outputs once. The group metadata lets the coordinator refuse the offsets of a
member of an older generation (KIP-447): a zombie that handled a partition since given away
aborts instead of publishing it a second time.

Failures, sorted as confluent-kafka documents them:
- retriable (a timeout, the coordinator moving): the same call again, with the batch holding its
  partitions (outage.py) and capped backoff, for as long as it takes;
- txn_requires_abort (a delivery failed, the offsets refused for a stale generation): abort, then
  the same prepared outputs in a new transaction, for the inputs still owned (a partition given
  away is its new owner's to redo); nothing is handled again and, aborted records being invisible,
  nothing is doubled. The consumer's position needs no rewind: it never moved past an
  uncommitted batch but by the batch in hand, which is the one sent again;
- a record refused for itself (too large, invalid): after the abort each suspect is sent alone
  in a transaction of its own, always aborted, to find it; its input is then dead-lettered, as
  without transactions (delivery.py);
- fatal (fenced by a newer producer with the same transactional.id, a broken epoch): raised as
  TransactionFatal; only a new producer can go on, and the supervisor's restart makes one;
- a call that never returns: librdkafka's send_offsets_to_transaction() can block past its
  timeout when the group coordinator went away mid-transaction (confluentinc/librdkafka#5456,
  #5511; seen here when the broker restarts). Each call runs on a daemon thread of its own and one
  still running well past its timeout is given up on with its producer: a new producer with the
  same transactional.id fences the stuck one and aborts its transaction, and the batch is sent
  again through it. The stuck one is kept (never destroyed under its own running call). And once
  the producer reports every broker connection lost, it is replaced before its next transaction,
  so the hang is mostly never met.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from processors.config import StageSettings
from processors.kafka_clients import Delivery, Outgoing, is_record_error
from processors.metrics import StageMetrics
from processors.runtime.commits import Partition
from processors.runtime.delivery import Deliverer
from processors.runtime.errors import OutputRefused, OutputTooLarge
from processors.runtime.feed import PartitionFeed
from processors.runtime.outage import Outage
from processors.runtime.outbox import Outbox, Pending
from processors.runtime.retry import RetryPolicy, StopRequested

# The inputs of a batch still owned, with their pendings: asked again before each attempt.
Owned = Callable[[], tuple[list[Message], list[Pending]]]

# How long an abort on the way out (stopping) may take; the coordinator aborts it anyway later.
ABORT_ON_STOP_S = 5.0
# Each transactional call's own timeout (a retriable timeout is simply called again) and how much
# longer a call may run before it counts as stuck. A call takes milliseconds when the broker is
# well; every stage copy that lived through a broker restart can meet the hang once, one after
# another down the pipeline, so each must be noticed soon.
CALL_TIMEOUT_S = 10.0
STUCK_AFTER_S = 5.0


class TransactionFatal(RuntimeError):
    """The transactional producer cannot go on (fenced, or its state broken): restart the stage."""


class ProducerStuck(Exception):
    """A transactional call still running STUCK_AFTER_S past its own timeout: the producer is
    given up on."""


class NeedsAbort(Exception):
    def __init__(self, error: KafkaError) -> None:
        super().__init__(error.str())
        self.error = error


def error_of(exc: KafkaException) -> KafkaError:
    error = exc.args[0] if exc.args else None
    return error if isinstance(error, KafkaError) else KafkaError(KafkaError._FAIL, str(exc))


async def _on_daemon_thread(func: Callable[[], Any], give_up_s: float, what: str) -> None:
    """func() on a thread of its own that never holds up the process's exit; ProducerStuck if it
    has not returned after `give_up_s` (it runs on, abandoned)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def settle(error: BaseException | None) -> None:
        if done.done():
            return
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)

    def target() -> None:
        error: BaseException | None = None
        try:
            func()
        except BaseException as exc:  # carried to the awaiting coroutine, whatever it is
            error = exc
        # An abandoned call can return after the loop is gone: nobody is waiting for it then.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, error)

    threading.Thread(target=target, name=f"txn-{what}", daemon=True).start()
    try:
        await asyncio.wait_for(asyncio.shield(done), timeout=give_up_s)
    except TimeoutError:
        done.cancel()  # whatever the abandoned call ends with, nobody is left to hear it
        raise ProducerStuck(f"{what} still running after {give_up_s:.0f}s") from None


class Transactions:
    """The producer's transactional calls, their errors sorted; `renew` makes a replacement
    producer (same transactional.id) when one is stuck (None: a stuck producer is fatal)."""

    def __init__(
        self,
        producer: Any,
        settings: StageSettings,
        policy: RetryPolicy,
        log: logging.Logger,
        renew: Callable[[], Any] | None = None,
    ) -> None:
        self.producer = producer
        self.timeout_s = min(CALL_TIMEOUT_S, settings.delivery_timeout_s)
        self.give_up_s = self.timeout_s + STUCK_AFTER_S
        # Set from librdkafka's error callback when every broker connection was lost (a broker
        # restart): the producer is replaced before its next transaction rather than after a
        # stuck call (librdkafka#5511: its cached group coordinator may never come back).
        self.brokers_lost = False
        self.policy = policy
        self.log = log
        self.open = False
        self._renew = renew
        # Producers given up on, still inside a call: destroying one would wait on that call.
        self.abandoned: list[Any] = []

    def renew_with(self, factory: Callable[[], Any]) -> None:
        """Make the producer with `factory`, and any replacement of it."""
        self._renew = factory
        self.producer = factory()

    async def renew(self, why: ProducerStuck, stopping: asyncio.Event) -> None:
        """Replace a stuck producer by a new one with the same transactional.id: its
        init_transactions() fences the old one and aborts the transaction it had open."""
        if self._renew is None:
            raise TransactionFatal(f"transactional producer stuck: {why}") from why
        self.log.error("transactional producer stuck (%s): replacing it", why)
        self.abandoned.append(self.producer)
        self.producer = self._renew()
        self.open = False
        self.brokers_lost = False  # the old producer's news: the new one starts afresh
        await self.init(stopping)

    async def init(self, stopping: asyncio.Event) -> None:
        """init_transactions(): fences an older producer of this transactional.id and aborts what
        it left open. The broker may not be up yet: retried until it answers or the stage stops."""
        round_ = 0
        while True:
            try:
                await _on_daemon_thread(
                    lambda: self.producer.init_transactions(self.timeout_s),
                    self.give_up_s,
                    "init_transactions",
                )
                return
            except ProducerStuck as exc:
                raise TransactionFatal(f"init_transactions: {exc}") from exc
            except KafkaException as exc:
                error = error_of(exc)
                if error.fatal() or not error.retriable():
                    raise TransactionFatal(f"init_transactions: {error.str()}") from exc
                round_ += 1
                delay = self.policy.delay(round_)
                self.log.warning("init_transactions failed, retrying in %.2fs: %s", delay, error.str())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), timeout=delay)
                if stopping.is_set():
                    raise StopRequested("stopping before the producer could start transactions") from exc

    def on_error(self, error: KafkaError) -> None:
        """The producer's error_cb (librdkafka's thread): remembers an all-brokers-down."""
        if error.code() == KafkaError._ALL_BROKERS_DOWN:
            self.brokers_lost = True

    async def begin(self, outage: Outage) -> None:
        if self.brokers_lost and self._renew is not None:
            # Between transactions nothing is open: the replacement only fences an idle producer.
            self.brokers_lost = False
            self.log.info("every broker connection was lost: a new transactional producer")
            self.producer = self._renew()  # the idle old one is simply dropped
            await self.init(outage.stopping)
        await self._call("begin_transaction", lambda: self.producer.begin_transaction(), outage)
        self.open = True

    async def send_offsets(self, offsets: dict[Partition, int], metadata: Any, outage: Outage) -> None:
        positions = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        await self._call(
            "send_offsets_to_transaction",
            lambda: self.producer.send_offsets_to_transaction(positions, metadata, self.timeout_s),
            outage,
        )

    async def commit(self, outage: Outage) -> None:
        await self._call(
            "commit_transaction", lambda: self.producer.commit_transaction(self.timeout_s), outage
        )
        self.open = False

    async def abort(self, outage: Outage) -> None:
        # An abortable state may come with retriable abort failures (the broker going away).
        await self._call("abort_transaction", lambda: self.producer.abort_transaction(self.timeout_s), outage)
        self.open = False

    async def abort_quietly(self) -> None:
        """On the way out (stopping): best effort; a transaction left open is aborted by the next
        producer of this transactional.id, or by the coordinator at transaction.timeout.ms."""
        if not self.open:
            return
        self.open = False
        producer = self.producer
        try:
            await _on_daemon_thread(
                lambda: producer.abort_transaction(ABORT_ON_STOP_S), ABORT_ON_STOP_S + 1, "abort_transaction"
            )
        except Exception as exc:
            self.log.warning("could not abort the open transaction on the way out: %s", exc)

    async def _call(self, what: str, func: Callable[[], Any], outage: Outage) -> None:
        round_ = 0
        while True:
            try:
                await _on_daemon_thread(func, self.give_up_s, what)
                return
            except KafkaException as exc:
                error = error_of(exc)
                if error.fatal():
                    self.open = False
                    raise TransactionFatal(f"{what}: {error.str()}") from exc
                if error.txn_requires_abort():
                    raise NeedsAbort(error) from exc
                if not error.retriable():
                    raise
                round_ += 1
                delay = self.policy.delay(round_)
                await outage.hold(f"the broker: {what}: {error.str()}")
                self.log.warning("%s failed, retrying in %.2fs: %s", what, delay, error.str())
                await outage.wait(delay)


class TransactionalDeliverer:
    """A batch's pendings and offsets through one transaction, as many times as it takes."""

    def __init__(
        self,
        deliverer: Deliverer,
        txn: Transactions,
        feed: PartitionFeed,
        settings: StageSettings,
        metrics: StageMetrics,
        log: logging.Logger,
        stage: str,
    ) -> None:
        self.deliverer = deliverer
        self.outbox: Outbox = deliverer.outbox
        self.txn = txn
        self.feed = feed
        self.settings = settings
        self.metrics = metrics
        self.log = log
        self.stage = stage

    async def deliver(self, owned: Owned, outage: Outage) -> None:
        round_ = 0
        replaced: dict[int, Pending] = {}
        while True:
            messages, pendings = owned()
            pendings = [replaced.get(id(p), p) for p in pendings]
            offsets = self.feed.commits.ahead(messages)
            if not offsets and not any(p.messages for p in pendings):
                return
            await self.deliverer.upload(pendings, outage)
            try:
                refused = await self._attempt_or_abort(pendings, offsets, outage)
            except ProducerStuck as exc:  # in any call, the abort's included
                await self.txn.renew(exc, outage.stopping)
                if offsets and await self._landed(offsets):
                    return
                continue
            except (StopRequested, asyncio.CancelledError):
                await self.txn.abort_quietly()
                raise
            if refused is None:
                return
            if refused:
                for index, error in refused.items():
                    replaced[id(pendings[index])] = self._refused(pendings[index], error)
                continue  # a smaller batch: no backoff
            round_ += 1
            self.metrics.retries.labels(self.stage).inc()
            delay = self.deliverer.policy.delay(round_)
            await outage.hold("the broker: a transaction did not commit")
            await outage.wait(delay)

    async def _landed(self, offsets: dict[Partition, int]) -> bool:
        """Whether the transaction a stuck producer had open committed after all. The stuck call
        may have been commit_transaction() itself, done on the coordinator though never answered;
        sending the batch again would then publish it twice. The renewal's init_transactions()
        has settled that transaction either way, and its offsets went with it: committed offsets
        at the batch's say it landed."""
        committed = await self.feed.committed(list(offsets))
        landed = all((committed.get(tp) or -1) >= offset for tp, offset in offsets.items())
        if landed:
            self.log.warning("the stuck producer's transaction had committed: the batch is not sent again")
            self.feed.commits.mark(offsets)
        return landed

    async def _attempt_or_abort(
        self, pendings: list[Pending], offsets: dict[Partition, int], outage: Outage
    ) -> dict[int, KafkaError] | None:
        try:
            return await self._attempt(pendings, offsets, outage)
        except NeedsAbort as exc:
            self.log.warning("transaction aborted, sending the batch again: %s", exc)
            await self.txn.abort(outage)
            return {}

    async def _attempt(
        self, pendings: list[Pending], offsets: dict[Partition, int], outage: Outage
    ) -> dict[int, KafkaError] | None:
        """One transaction: None once committed; else (aborted) the pendings refused for a record
        of their own, by index (empty: a failure to retry)."""
        await self.txn.begin(outage)
        # After begin(): it may have replaced the producer.
        owners, delivery = await self._send(self.txn.producer, pendings, outage)
        failures = delivery.failures()
        for _, error in failures:
            if error.fatal():
                raise TransactionFatal(f"fatal producer error: {error.str()}")
        if not failures:
            if offsets:
                metadata = await self.feed.group_metadata()
                await self.txn.send_offsets(offsets, metadata, outage)
            await self.txn.commit(outage)
            self.feed.commits.mark(offsets)
            self._count(delivery)
            return None
        await self.txn.abort(outage)
        suspects = sorted({owners[i] for i, e in failures if is_record_error(e.code())})
        first = failures[0][1].str()
        if not suspects:
            self.log.warning(
                "%d message(s) not delivered in the transaction (%s): aborted", len(failures), first
            )
            return {}
        return await self._probe(pendings, suspects, outage)

    async def _send(
        self, producer: Any, pendings: list[Pending], outage: Outage
    ) -> tuple[list[int], Delivery]:
        """Produce every message and wait for every report. Nothing is sent again inside a
        transaction: librdkafka retries on its own until message.timeout.ms, and a message that
        still fails makes the transaction abortable."""
        owners: list[int] = []
        messages: list[Outgoing] = []
        for index, pending in enumerate(pendings):
            for message in pending.messages:
                owners.append(index)
                messages.append(message)
        delivery = Delivery(producer, messages)
        if not messages:
            return owners, delivery
        await asyncio.to_thread(delivery.send)
        wait_s = self.settings.delivery_timeout_s
        while not await asyncio.to_thread(delivery.wait, wait_s):
            await outage.hold(f"the broker: no acknowledgement within {wait_s:.0f}s")
            await outage.wait(0.0)  # a stop is not kept waiting for the broker
        return owners, delivery

    async def _probe(
        self, pendings: list[Pending], suspects: list[int], outage: Outage
    ) -> dict[int, KafkaError]:
        """Each suspect alone in a transaction that is always aborted: refused alone, it is the
        one (the broker refuses a whole record batch for one record in it)."""
        refused: dict[int, KafkaError] = {}
        for index in suspects:
            await self.txn.begin(outage)
            _, delivery = await self._send(self.txn.producer, [pendings[index]], outage)
            await self.txn.abort(outage)
            errors = [e for _, e in delivery.failures() if is_record_error(e.code())]
            if errors:
                refused[index] = errors[0]
        self.log.info("%d suspect input(s) sent alone: %d refused", len(suspects), len(refused))
        return refused

    def _refused(self, pending: Pending, error: KafkaError) -> Pending:
        if error.code() == KafkaError.MSG_SIZE_TOO_LARGE:
            why: OutputTooLarge | OutputRefused = OutputTooLarge(f"refused by Kafka: {error.str()}")
            return self.outbox.refused(pending, why, "output_too_large")
        return self.outbox.refused(
            pending, OutputRefused(f"refused by Kafka: {error.str()}"), "output_refused"
        )

    def _count(self, delivery: Delivery) -> None:
        for topic, count in Counter(delivery.messages[i].topic for i in delivery.delivered()).items():
            self.metrics.produced.labels(self.stage, self.outbox.topics.logical(topic).value).inc(count)
