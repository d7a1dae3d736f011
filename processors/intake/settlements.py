"""How releases reach the reserver: intake reads the credit settlements back from pipeline.events.

A thread of intake's process consumes pipeline.events in a consumer group of its own
(``<prefix>lightbox.intake.credits``), not in intake's group: sharing intake's group would make
the sticky assignor balance partitions of both topics together, and one replica could end up with
every catalog partition. For each ``credit_consumed`` / ``credit_released`` event it writes the
job's settled ledger entry to the account's changelog partition (processors/intake/ledger.py),
queues it for the handler, and only then commits: a restart loses no settlement (what was
written is restored with the table; what was not is read again).

The handler takes the queue before each batch (IntakeStage.before_batch), so every settlement
read so far is in the ledger before the next request is decided. A settlement for an account
another replica holds reaches that replica through the changelog at its next restore; until
then that replica still counts the amount as committed (docs/decisions.md, "Credits").
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaException, TopicPartition

from processors.backoff import backoff_delay
from processors.config import Settings
from processors.credits.accounts import Reservation, reservation_of
from processors.intake.ledger import CONSUMED, RELEASED, credit_key, settled_entry
from processors.intake.slot import account_partition
from processors.job_states import JobState
from processors.kafka_clients import (
    DeliveryFailed,
    Outgoing,
    group_id_for,
    make_consumer,
    make_producer,
    produce_and_confirm,
)
from processors.runtime.codec import Codec
from processors.state.entry import SeenEntry
from schemas.serde import SerdeError
from schemas.topics import Topic, TopicNames

log = logging.getLogger(__name__)

GROUP_SUFFIX = "intake.credits"  # the consumer group: <prefix>lightbox.intake.credits
_SETTLES = {JobState.CREDIT_CONSUMED.value: CONSUMED, JobState.CREDIT_RELEASED.value: RELEASED}


@dataclass(frozen=True)
class Settled:
    job_id: str
    reservation: Reservation
    state: str  # CONSUMED | RELEASED
    entry: SeenEntry  # as written to the changelog


def settled_of(value: dict[str, Any], partitions: int, now_ms: int) -> Settled | None:
    """The settlement a pipeline event records, or None (most events are not one)."""
    state = _SETTLES.get(str(value.get("state", "")))
    if state is None:
        return None
    reservation = reservation_of(value.get("attributes"))
    job_id = str(value.get("job_id") or "")
    if reservation is None or not job_id:
        return None
    partition = account_partition(reservation.account, partitions)
    return Settled(job_id, reservation, state, settled_entry(job_id, reservation, state, partition, now_ms))


class SettlementReader:
    def __init__(
        self,
        settings: Settings,
        partitions: int,
        clock_ms: Callable[[], int],
        *,
        consumer_factory: Callable[[], Any] | None = None,
        producer: Any | None = None,
    ) -> None:
        self.settings = settings
        self.partitions = partitions
        self.clock_ms = clock_ms
        names = TopicNames(settings.kafka.topic_prefix)
        self.events_topic = names(Topic.PIPELINE_EVENTS)
        self.changelog_topic = names(Topic.INTAKE_SEEN)
        codec = Codec.of(settings)
        self.serde = codec.serde(Topic.PIPELINE_EVENTS)
        self.changelog_serde = codec.serde(Topic.INTAKE_SEEN)
        self._consumer_factory = consumer_factory or self._consumer
        self._producer = producer
        self._queue: queue.SimpleQueue[Settled] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        # What this reader committed per partition of pipeline.events (its own thread's only).
        self._committed: dict[int, int] = {}

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="intake-settlements", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def take(self) -> list[Settled]:
        """Every settlement read (and written) since the last call, in order."""
        taken = []
        while True:
            try:
                taken.append(self._queue.get_nowait())
            except queue.Empty:
                return taken

    # -- the thread ---------------------------------------------------------------------------

    def _consumer(self) -> Any:
        return make_consumer(self.settings, group_id_for(self.settings, GROUP_SUFFIX))

    def _run(self) -> None:
        consumer = self._consumer_factory()
        consumer.subscribe([self.events_topic])
        if self._producer is None:
            self._producer = make_producer(self.settings)
        try:
            while not self._stopping.is_set():
                messages = consumer.consume(500, 0.5)
                if messages:
                    self._handle(consumer, messages)
                else:
                    self._commit_past_markers(consumer)
        except Exception:
            # Intake goes on deciding with what it knows (releases only ever free budget); the
            # supervisor's restart of intake starts a fresh reader. Logged loudly.
            log.exception("credit settlement reader stopped")
        finally:
            consumer.close()

    def _commit_past_markers(self, consumer: Any) -> None:
        """Idle: commit the position, past the transaction markers that end pipeline.events'
        partitions (every stage writes it in transactions), or the group's lag never reaches 0.
        Everything consumed is handled before the next consume(), so nothing is skipped."""
        assignment = consumer.assignment()
        if not assignment:
            return
        ahead = [
            tp
            for tp in consumer.position(assignment)
            # only past what this reader read and committed itself: that commit is the record
            # before the markers
            if tp.partition in self._committed and tp.offset > self._committed[tp.partition]
        ]
        if not ahead:
            return
        try:
            consumer.commit(offsets=ahead, asynchronous=False)
        except KafkaException as exc:
            log.warning("could not commit settlement offsets: %s", exc)
            return
        for tp in ahead:
            self._committed[tp.partition] = tp.offset

    def _handle(self, consumer: Any, messages: list[Any]) -> None:
        settled: list[Settled] = []
        offsets: dict[int, int] = {}
        for message in messages:
            if message.error():
                continue
            offsets[message.partition()] = message.offset() + 1
            try:
                value = self.serde.decode(message.value())
            except SerdeError:
                continue  # the event-log sink dead-letters it; nothing to settle here
            found = settled_of(value, self.partitions, self.clock_ms())
            if found is not None:
                settled.append(found)
        if settled and not self._write(settled):
            return  # stopping during an outage: nothing committed, read again next time
        for s in settled:
            self._queue.put(s)
        if offsets:
            try:
                consumer.commit(
                    offsets=[TopicPartition(self.events_topic, p, o) for p, o in offsets.items()],
                    asynchronous=False,
                )
            except KafkaException as exc:
                # Read again after a restart or rebalance: settling twice changes nothing.
                log.warning("could not commit settlement offsets: %s", exc)
                return
            for partition, offset in offsets.items():
                self._committed[partition] = max(self._committed.get(partition, -1), offset)

    def _write(self, settled: list[Settled]) -> bool:
        """The entries on the changelog before the offsets are committed (a crash in between
        reads them again). A broker that is down is waited for; False: stopped meanwhile."""
        messages = [
            Outgoing(
                self.changelog_topic,
                credit_key(s.job_id).encode(),
                self.changelog_serde.encode(s.entry.to_record(credit_key(s.job_id))),
                None,
                s.entry.partition,
            )
            for s in settled
        ]
        attempt = 0
        while not self._stopping.is_set():
            try:
                produce_and_confirm(self._producer, messages)
                return True
            except DeliveryFailed as exc:
                attempt += 1
                stage = self.settings.stage
                delay = backoff_delay(attempt, stage.backoff_initial_s, stage.backoff_max_s)
                log.warning("settlement entries not written, retrying in %.1fs: %s", delay, exc)
                self._stopping.wait(delay)
        return False
