"""Producing a batch: every message delivered, or its input dead-lettered for the message's own
fault, and never a crash for the broker being down.

1. Objects a dead letter points at (offloaded originals) are stored first; storage being down
   holds the batch like any dependency outage.
2. Every message is produced through kafka_clients.Delivery and each delivery report is read:
   - refused for the record itself (kafka_clients.RECORD_ERROR_CODES): first sent again alone,
     because the broker refuses a whole record batch for one record in it and librdkafka batches
     a partition's messages together; refused alone too, the Pending it belongs to is replaced by
     outbox.refused() (the input's dead letter and a `failed` event; for a dead letter, the same
     letter with its original stored aside) and that is sent next;
   - not acknowledged within stage.delivery_timeout_s, or failed otherwise (the broker down, a
     timeout, no leader): the batch holds its partitions and waits, then sends again exactly the
     messages that failed (those still in librdkafka's queue are waited for, not duplicated),
     with capped backoff, for as long as it takes.
3. Only then does the runner commit.

A fatal producer error (the idempotent producer's state is broken) is raised: only a new
producer, which a restart of the stage makes, can send again.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError

from processors.config import StageSettings
from processors.kafka_clients import Delivery, DeliveryFailed, Outgoing, is_record_error
from processors.metrics import StageMetrics
from processors.runtime.errors import Fault, OutputRefused, OutputTooLarge, classify
from processors.runtime.outage import Outage
from processors.runtime.outbox import Outbox, Pending
from processors.runtime.retry import RetryPolicy


class Deliverer:
    def __init__(
        self,
        outbox: Outbox,
        store: Callable[[], Any],
        policy: RetryPolicy,
        settings: StageSettings,
        metrics: StageMetrics,
        log: logging.Logger,
        stage: str,
    ) -> None:
        self.outbox = outbox
        self.store = store
        self.policy = policy
        self.settings = settings
        self.metrics = metrics
        self.log = log
        self.stage = stage

    async def deliver(self, producer: Any, pendings: list[Pending], outage: Outage) -> list[Pending]:
        """Deliver everything; returns the pendings as they were finally sent (dead letters in
        place of refused ones)."""
        pendings = list(pendings)
        todo = list(range(len(pendings)))
        # Each replacement is smaller than what it replaces (a letter, then a letter without its
        # original, then nothing), so this ends.
        while todo:
            await self.upload([pendings[i] for i in todo], outage)
            refused = await self._produce(producer, [(i, pendings[i]) for i in todo], outage)
            for index, error in refused.items():
                if error.code() == KafkaError.MSG_SIZE_TOO_LARGE:
                    why: OutputTooLarge | OutputRefused = OutputTooLarge(f"refused by Kafka: {error.str()}")
                    reason = "output_too_large"
                else:
                    why, reason = OutputRefused(f"refused by Kafka: {error.str()}"), "output_refused"
                pendings[index] = self.outbox.refused(pendings[index], why, reason)
            todo = sorted(refused)
        return pendings

    def _alone(self, delivery: Delivery, indexes: list[int]) -> None:
        for index in indexes:
            delivery.send([index])
            delivery.wait(self.settings.delivery_timeout_s)

    async def upload(self, pendings: list[Pending], outage: Outage) -> None:
        for pending in pendings:
            for key, data in pending.uploads:
                round_ = 0
                while True:
                    try:
                        await asyncio.to_thread(self.store().put_bytes, key, data, "application/octet-stream")
                        break
                    except Exception as exc:
                        if classify(exc) is not Fault.DEPENDENCY:
                            # The letter still says where the original should be, its size and
                            # digest; the original itself stays on the input topic until retention.
                            self.log.error(
                                "could not store the original of a dead letter at %s: %s", key, exc
                            )
                            break
                        round_ += 1
                        await outage.hold(f"storing a dead letter's original: {exc}")
                        await outage.wait(self.policy.delay(round_))
            pending.uploads = []

    async def _produce(
        self, producer: Any, pendings: list[tuple[int, Pending]], outage: Outage
    ) -> dict[int, KafkaError]:
        """Send every message of these pendings until each is delivered or refused; the refused,
        by the index of the pending they belong to."""
        owners: list[int] = []
        messages: list[Outgoing] = []
        for index, pending in pendings:
            for message in pending.messages:
                owners.append(index)
                messages.append(message)
        if not messages:
            return {}
        delivery = Delivery(producer, messages)
        await asyncio.to_thread(delivery.send)
        refused: dict[int, KafkaError] = {}
        confirmed: set[int] = set()
        round_ = 0
        wait_s = self.settings.delivery_timeout_s
        while True:
            await asyncio.to_thread(delivery.wait, wait_s)
            failures = delivery.failures()
            for _, error in failures:
                if error.fatal():
                    raise DeliveryFailed(f"fatal producer error: {error.str()}", [error])
            suspects = [
                i
                for i, e in failures
                if is_record_error(e.code()) and i not in confirmed and owners[i] not in refused
            ]
            if suspects:
                # The broker refuses a whole batch for one record in it: each suspect alone says
                # whether it is the one (nothing of a refused batch was written, so no duplicate).
                await asyncio.to_thread(self._alone, delivery, suspects)
                confirmed.update(suspects)
                failures = delivery.failures()
                for i, error in failures:
                    if i in confirmed and is_record_error(error.code()):
                        refused.setdefault(owners[i], error)
            # A refused input's other messages are not sent again: its dead letter replaces them.
            failed = [i for i, error in failures if owners[i] not in refused]
            in_flight = [i for i in delivery.in_flight() if owners[i] not in refused]
            if not failed and not in_flight:
                break
            round_ += 1
            first = failures[0][1].str() if failures else f"no acknowledgement within {wait_s:.0f}s"
            await outage.hold(f"the broker: {first}")
            self.metrics.retries.labels(self.stage).inc()
            delay = self.policy.delay(round_)
            self.log.warning(
                "broker unavailable (%s): %d failed message(s) sent again and %d unacknowledged one(s) "
                "waited for, in %.2fs",
                first,
                len(failed),
                len(in_flight),
                delay,
                extra={"reason": "delivery", "attempt": round_},
            )
            await outage.wait(delay)
            if failed:
                await asyncio.to_thread(delivery.send, failed)
            wait_s = max(delay, 1.0)
        delivered = delivery.delivered()
        if confirmed:
            self.log.info("%d suspect message(s) sent alone: %d refused", len(confirmed), len(refused))
        for topic, count in Counter(messages[i].topic for i in delivered).items():
            self.metrics.produced.labels(self.stage, self.outbox.topics.logical(topic).value).inc(count)
        return refused
