"""An in-memory broker with a consumer and a producer that stand in for confluent-kafka's, so the
real StageRunner can be driven batch by batch without Kafka (after bytewax's testing source and
sink: inputs are lists, outputs are captured lists).

- MemoryBroker: topics as lists of partitions, each a list of messages with offsets, keys,
  headers and timestamps; what each consumer group committed, and every commit in order.
  delete_records() moves a partition's log start on (retention); topic_limits refuses larger
  messages in the delivery report, as the broker's max.message.bytes does.
- MemoryConsumer: subscribe() with rebalance callbacks, consume(), pause()/resume(), position(),
  watermarks and a synchronous commit() that records offsets. A subscription is assigned every
  partition of its topics on the first consume(), like a lone member of a group; revoke() and
  assign() queue a rebalance that runs inside the next consume(), as librdkafka runs its
  callbacks. fail_commits() makes commits fail. A position before the log start resumes at the
  log start (auto.offset.reset=earliest), without a word, like librdkafka.
- MemoryProducer: produce() queues, poll()/flush() deliver (append to the broker, then call the
  delivery callback), as librdkafka serves reports only in poll/flush. fail_next() makes a
  delivery fail with a KafkaError; queue_limit makes produce() raise BufferError when full;
  max_message_bytes refuses a larger message in produce(), as librdkafka does; stall() keeps
  every message queued and unreported (a broker that is down) until unstall().
- Transactions (a MemoryProducer made with a transactional_id): init/begin/commit/abort and
  send_offsets_to_transaction as confluent-kafka's. Records written in a transaction are in the
  log at once but hidden from read_committed consumers (the default) and from
  MemoryBroker.messages() until it commits; an open one holds readers at it (the last stable
  offset), an aborted one is skipped for good; its offsets are committed only with it.
  init_transactions() of a new producer with the same id aborts what the last one left open and
  fences it (its next call fails fatally). Group metadata carries a generation, bumped by every
  rebalance and by MemoryBroker.new_generation(): offsets sent with an older one are refused
  (ILLEGAL_GENERATION, abortable), as KIP-447 fences a zombie. fail_transaction() injects errors
  (or crashes) into a transactional call.
- MemoryStore: processors.storage.ObjectStore over a dict (its primitive calls replaced, the rest
  its own); fail_next() makes the next calls raise (storage down).

Only what the runtime and the gateway's produce loop call is here; it is not a Kafka emulator
(no replication, one member per group).
"""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import TIMESTAMP_CREATE_TIME, KafkaError, KafkaException, Message, TopicPartition
from minio.error import S3Error

from processors.kafka_clients import Outgoing
from processors.runtime.sizes import wire_size
from processors.storage import ObjectStore

Headers = Sequence[tuple[str, bytes]] | None
Partition = tuple[str, int]
RebalanceCallback = Callable[[Any, list[TopicPartition]], None]


def _bytes(value: str | bytes | None) -> bytes | None:
    return value.encode() if isinstance(value, str) else value


@dataclass(frozen=True)
class Commit:
    group: str
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True)
class GroupMetadata:
    """What consumer_group_metadata() hands a transaction: the group and its generation."""

    group: str
    generation: int


@dataclass
class _Transaction:
    records: list[tuple[str, int, int]] = field(default_factory=list)
    offsets: list[tuple[str, str, int, int]] = field(default_factory=list)


@dataclass
class MemoryBroker:
    """Topics and committed offsets, shared by the consumers and producers made from it."""

    default_partitions: int = 1
    topics: dict[str, list[list[Message]]] = field(default_factory=dict)
    committed: dict[tuple[str, str, int], int] = field(default_factory=dict)
    commits: list[Commit] = field(default_factory=list)
    # Per topic: the broker's max.message.bytes (a larger message fails its delivery).
    topic_limits: dict[str, int] = field(default_factory=dict)
    # Per partition: the first offset still in the log (retention deleted the ones before).
    log_start: dict[Partition, int] = field(default_factory=dict)

    # Transactions: records not yet committed (offset -> transactional id), records aborted,
    # each id's producer epoch and open transaction, every commit or abort in order.
    open_records: dict[tuple[str, int, int], str] = field(default_factory=dict)
    aborted: set[tuple[str, int, int]] = field(default_factory=set)
    epochs: dict[str, int] = field(default_factory=dict)
    transactions: list[tuple[str, str]] = field(default_factory=list)
    generations: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.lock = threading.Condition()
        self._open: dict[str, _Transaction] = {}

    # -- transactions ------------------------------------------------------------------------

    def new_generation(self, group: str) -> int:
        """A rebalance of the group: metadata handed out before it is stale."""
        with self.lock:
            self.generations[group] = self.generations.get(group, 0) + 1
            return self.generations[group]

    def generation(self, group: str) -> int:
        with self.lock:
            return self.generations.get(group, 0)

    def init_transactions(self, txid: str) -> int:
        """A new producer epoch for `txid`: its predecessor's open transaction is aborted."""
        with self.lock:
            self._end(txid, commit=False)
            self.epochs[txid] = self.epochs.get(txid, 0) + 1
            return self.epochs[txid]

    def end_transaction(self, txid: str, epoch: int, commit: bool) -> None:
        with self.lock:
            self._check_epoch(txid, epoch)
            self._open.setdefault(txid, _Transaction())
            self._end(txid, commit)

    def add_offsets(self, txid: str, epoch: int, group: str, offsets: list[tuple[str, int, int]]) -> None:
        with self.lock:
            self._check_epoch(txid, epoch)
            self._open.setdefault(txid, _Transaction()).offsets.extend((group, *o) for o in offsets)

    def _check_epoch(self, txid: str, epoch: int) -> None:
        if self.epochs.get(txid) != epoch:
            raise KafkaException(
                KafkaError(KafkaError._FENCED, f"producer fenced: {txid} has a newer epoch", fatal=True)
            )

    def _end(self, txid: str, commit: bool) -> None:
        txn = self._open.pop(txid, None)
        if txn is None:
            return
        for key in txn.records:
            self.open_records.pop(key, None)
            if not commit:
                self.aborted.add(key)
        if commit:
            for group, topic, partition, offset in txn.offsets:
                self._commit(group, topic, partition, offset)
        self.transactions.append((txid, "commit" if commit else "abort"))
        self.lock.notify_all()

    def visible(self, topic: str, partition: int, offset: int) -> bool | None:
        """For read_committed: True, False (aborted: skipped) or None (open: wait here)."""
        key = (topic, partition, offset)
        if key in self.open_records:
            return None
        return key not in self.aborted

    def create_topic(self, name: str, partitions: int | None = None) -> None:
        with self.lock:
            self.topics.setdefault(name, [[] for _ in range(partitions or self.default_partitions)])

    def partitions(self, name: str) -> int:
        with self.lock:
            return len(self.topics.get(name, []))

    def append(
        self,
        topic: str,
        value: bytes | None,
        key: str | bytes | None = None,
        headers: Headers = None,
        partition: int | None = None,
        txid: str | None = None,
    ) -> Message:
        """Write one message (partitioned by key unless `partition` is given), inside `txid`'s
        open transaction if named; returns it with its offset."""
        self.create_topic(topic)
        key_bytes = _bytes(key)
        with self.lock:
            parts = self.topics[topic]
            if partition is None or partition < 0:
                partition = zlib.crc32(key_bytes or b"") % len(parts)
            if partition >= len(parts):
                raise KafkaException(KafkaError(KafkaError._UNKNOWN_PARTITION, f"{topic}/{partition}"))
            message = Message(
                topic=topic,
                partition=partition,
                offset=len(parts[partition]),
                key=key_bytes,
                value=value,
                headers=list(headers) if headers else None,
                timestamp=(TIMESTAMP_CREATE_TIME, int(time.time() * 1000)),
            )
            parts[partition].append(message)
            if txid is not None:
                key = (topic, partition, int(message.offset() or 0))
                self.open_records[key] = txid
                self._open.setdefault(txid, _Transaction()).records.append(key)
            self.lock.notify_all()
            return message

    def messages(self, topic: str, read_committed: bool = True) -> list[Message]:
        """Every message of a topic still in the log, partition by partition; by default only
        what a read_committed reader sees (nothing open or aborted)."""
        with self.lock:
            return [
                m
                for p, part in enumerate(self.topics.get(topic, []))
                for m in part[self.log_start.get((topic, p), 0) :]
                if not read_committed or self.visible(topic, p, int(m.offset() or 0))
            ]

    def delete_records(self, topic: str, partition: int, before: int) -> None:
        """Retention: offsets before `before` are gone; the next ones keep their offsets."""
        with self.lock:
            self.log_start[(topic, partition)] = max(self.log_start.get((topic, partition), 0), before)

    def committed_offset(self, group: str, topic: str, partition: int) -> int | None:
        with self.lock:
            return self.committed.get((group, topic, partition))

    def _commit(self, group: str, topic: str, partition: int, offset: int) -> None:
        with self.lock:
            self.committed[(group, topic, partition)] = offset
            self.commits.append(Commit(group, topic, partition, offset))


class MemoryConsumer:
    def __init__(self, broker: MemoryBroker, group_id: str, read_committed: bool = True) -> None:
        self.broker = broker
        self.group_id = group_id
        self.read_committed = read_committed
        self.generation = broker.generation(group_id)
        self._topics: list[str] = []
        self._on_assign: RebalanceCallback | None = None
        self._on_revoke: RebalanceCallback | None = None
        self._joined = False
        self._positions: dict[Partition, int] = {}  # assigned partitions and their next offset
        self._paused: set[Partition] = set()
        self._rebalances: list[tuple[str, list[Partition]]] = []
        self._commit_error: KafkaException | None = None
        self._commit_failures = 0
        self.closed = False
        self.consume_calls = 0
        # Every pause() and resume() call, in order, with the partitions it named.
        self.flow_control: list[tuple[str, list[Partition]]] = []

    # -- group membership --------------------------------------------------------------------

    def subscribe(
        self,
        topics: list[str],
        on_assign: RebalanceCallback | None = None,
        on_revoke: RebalanceCallback | None = None,
    ) -> None:
        for topic in topics:
            self.broker.create_topic(topic)
        self._topics = list(topics)
        self._on_assign, self._on_revoke = on_assign, on_revoke

    def revoke(self, partitions: Iterable[Partition]) -> None:
        """Queue a rebalance that takes these partitions away inside the next consume()."""
        self._rebalances.append(("revoke", list(partitions)))

    def assign(self, partitions: Iterable[Partition]) -> None:
        """Queue a rebalance that (re)assigns these partitions inside the next consume(); each
        starts at its group's committed offset, as after a real rebalance."""
        self._rebalances.append(("assign", list(partitions)))

    def _rebalance(self) -> None:
        if not self._joined:
            self._joined = True
            everything = [(t, p) for t in self._topics for p in range(self.broker.partitions(t))]
            self._rebalances.insert(0, ("assign", everything))
        while self._rebalances:
            kind, partitions = self._rebalances.pop(0)
            self.generation = self.broker.new_generation(self.group_id)
            tps = [TopicPartition(t, p) for t, p in partitions]
            if kind == "revoke":
                if self._on_revoke is not None:
                    self._on_revoke(self, tps)
                for tp in partitions:
                    # A pause outlives the assignment, as in librdkafka (checked against the real
                    # client): a partition paused when it left comes back paused.
                    self._positions.pop(tp, None)
            else:
                for t, p in partitions:
                    committed = self.broker.committed_offset(self.group_id, t, p)
                    self._positions[(t, p)] = committed if committed is not None else 0
                if self._on_assign is not None:
                    self._on_assign(self, tps)

    def consumer_group_metadata(self) -> GroupMetadata:
        return GroupMetadata(self.group_id, self.generation)

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(t, p) for t, p in self._positions]

    # -- reading -----------------------------------------------------------------------------

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Message]:
        self.consume_calls += 1
        self._rebalance()
        deadline = time.monotonic() + max(0.0, timeout)
        with self.broker.lock:
            while True:
                batch = self._take(num_messages)
                remaining = deadline - time.monotonic()
                if batch or remaining <= 0:
                    return batch
                self.broker.lock.wait(remaining)

    def _take(self, limit: int) -> list[Message]:
        taken: list[Message] = []
        for tp, position in sorted(self._positions.items()):
            if tp in self._paused:
                continue
            log = self.broker.topics.get(tp[0], [])[tp[1]]
            # auto.offset.reset=earliest: a deleted position resumes at the log start, silently.
            position = max(position, self.broker.log_start.get(tp, 0))
            while position < len(log) and len(taken) < limit:
                if self.read_committed:
                    seen = self.broker.visible(tp[0], tp[1], position)
                    if seen is None:  # an open transaction: the last stable offset
                        break
                    if not seen:
                        position += 1
                        continue
                taken.append(log[position])
                position += 1
            self._positions[tp] = position
        return taken

    def pause(self, partitions: list[TopicPartition]) -> None:
        named = [(tp.topic, tp.partition) for tp in partitions]
        self.flow_control.append(("pause", named))
        self._paused.update(named)

    def resume(self, partitions: list[TopicPartition]) -> None:
        named = [(tp.topic, tp.partition) for tp in partitions]
        self.flow_control.append(("resume", named))
        self._paused.difference_update(named)

    @property
    def paused(self) -> set[Partition]:
        return set(self._paused)

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [
            TopicPartition(tp.topic, tp.partition, self._positions.get((tp.topic, tp.partition), -1001))
            for tp in partitions
        ]

    def get_watermark_offsets(
        self, partition: TopicPartition, timeout: float | None = None, cached: bool = False
    ) -> tuple[int, int]:
        with self.broker.lock:
            log = self.broker.topics.get(partition.topic, [])
            low = self.broker.log_start.get((partition.topic, partition.partition), 0)
            return (low, len(log[partition.partition]) if partition.partition < len(log) else -1)

    # -- committing --------------------------------------------------------------------------

    def fail_commits(self, error: KafkaException, times: int = 1) -> None:
        """Make the next `times` commit() calls raise `error` (e.g. after a lost rebalance)."""
        self._commit_error, self._commit_failures = error, times

    def commit(
        self,
        message: Message | None = None,
        offsets: list[TopicPartition] | None = None,
        asynchronous: bool = True,
    ) -> list[TopicPartition] | None:
        if self._commit_failures > 0:
            self._commit_failures -= 1
            assert self._commit_error is not None
            raise self._commit_error
        results = []
        for tp in offsets or []:
            self.broker._commit(self.group_id, tp.topic, tp.partition, tp.offset)
            results.append(TopicPartition(tp.topic, tp.partition, tp.offset))
        return None if asynchronous else results

    def committed(
        self, partitions: list[TopicPartition], timeout: float | None = None
    ) -> list[TopicPartition]:
        found = []
        for tp in partitions:
            offset = self.broker.committed_offset(self.group_id, tp.topic, tp.partition)
            found.append(TopicPartition(tp.topic, tp.partition, -1001 if offset is None else offset))
        return found

    def close(self) -> None:
        self.closed = True


@dataclass
class _Queued:
    topic: str
    value: bytes | None
    key: bytes | None
    headers: Headers
    partition: int | None
    on_delivery: Callable[[KafkaError | None, Message], None] | None


class Hang(Exception):
    """For fail_transaction(): the call blocks until `until` is set, past any timeout, as
    librdkafka's send_offsets_to_transaction() can when the group coordinator went away."""

    def __init__(self, until: threading.Event, after: bool = False) -> None:
        super().__init__("hangs")
        self.until = until
        # After the call did its work (commit_transaction only): done on the coordinator, the
        # answer never comes back.
        self.after = after


def _state_error(why: str) -> KafkaException:
    return KafkaException(KafkaError(KafkaError._STATE, why))


class MemoryProducer:
    def __init__(
        self,
        broker: MemoryBroker,
        queue_limit: int | None = None,
        max_message_bytes: int | None = None,
        transactional_id: str | None = None,
    ) -> None:
        self.broker = broker
        self.transactional_id = transactional_id
        # uninit | ready | in_txn | abortable | fatal (the transactional producer's states)
        self.txn_state = "uninit"
        self._epoch = 0
        self._txn_error: KafkaError | None = None
        self._txn_failures: dict[str, list[KafkaError | BaseException]] = {}
        self._hang_after: Hang | None = None
        self.queue_limit = queue_limit
        self.max_message_bytes = max_message_bytes
        self._queue: list[_Queued] = []
        self._failures: list[tuple[str | None, KafkaError]] = []
        self._lock = threading.Lock()
        self._stalled = threading.Event()
        self.delivered: list[Message] = []
        self.failed: list[tuple[str, KafkaError]] = []
        self.produce_calls = 0

    # -- transactions ------------------------------------------------------------------------

    @property
    def transactional(self) -> bool:
        return self.transactional_id is not None

    def fail_transaction(self, call: str, error: KafkaError | BaseException, times: int = 1) -> None:
        """Make the next `times` calls of `call` (begin, send_offsets, commit, abort) fail: a
        KafkaError is raised as confluent-kafka raises it (an abortable one leaves the
        transaction abortable, a fatal one the producer unusable); a Hang blocks the call; any
        other exception is raised as it is, before the call does anything (a process killed at
        that point)."""
        with self._lock:
            self._txn_failures.setdefault(call, []).extend([error] * times)

    def _injected(self, call: str) -> None:
        with self._lock:
            queued = self._txn_failures.get(call)
            failure = queued.pop(0) if queued else None
        if failure is None:
            return
        if isinstance(failure, Hang):
            if failure.after:
                with self._lock:
                    self._hang_after = failure
                return
            failure.until.wait()
            return
        if not isinstance(failure, KafkaError):
            raise failure
        if failure.fatal():
            self.txn_state = "fatal"
        elif failure.txn_requires_abort():
            self.txn_state, self._txn_error = "abortable", failure
        raise KafkaException(failure)

    def _txid(self) -> str:
        if self.transactional_id is None:
            raise _state_error("the producer is not transactional (no transactional.id)")
        return self.transactional_id

    def _usable(self) -> None:
        if self.txn_state == "fatal":
            raise KafkaException(KafkaError(KafkaError._FENCED, "producer fenced", fatal=True))
        try:
            self.broker._check_epoch(self._txid(), self._epoch)
        except KafkaException:
            self.txn_state = "fatal"
            raise

    def init_transactions(self, timeout: float | None = None) -> None:
        self._epoch = self.broker.init_transactions(self._txid())
        self.txn_state = "ready"

    def begin_transaction(self) -> None:
        self._usable()
        self._injected("begin")
        if self.txn_state != "ready":
            raise _state_error(f"begin_transaction in state {self.txn_state}")
        self.txn_state = "in_txn"

    def send_offsets_to_transaction(
        self, positions: list[TopicPartition], group_metadata: GroupMetadata, timeout: float | None = None
    ) -> None:
        self._usable()
        self._injected("send_offsets")
        self._abortable()
        if self.txn_state != "in_txn":
            raise _state_error(f"send_offsets_to_transaction in state {self.txn_state}")
        if group_metadata.generation != self.broker.generation(group_metadata.group):
            error = KafkaError(
                KafkaError.ILLEGAL_GENERATION,
                "Broker: Specified group generation id is not valid",
                txn_requires_abort=True,
            )
            self.txn_state, self._txn_error = "abortable", error
            raise KafkaException(error)
        self.broker.add_offsets(
            self._txid(),
            self._epoch,
            group_metadata.group,
            [(tp.topic, tp.partition, tp.offset) for tp in positions],
        )

    def commit_transaction(self, timeout: float | None = None) -> None:
        self._usable()
        self._injected("commit")
        if self.txn_state == "in_txn":
            if self._stalled.is_set():
                raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "commit timed out", retriable=True))
            self._deliver()
        self._abortable()
        if self.txn_state != "in_txn":
            raise _state_error(f"commit_transaction in state {self.txn_state}")
        self.broker.end_transaction(self._txid(), self._epoch, commit=True)
        self.txn_state = "ready"
        with self._lock:
            hang, self._hang_after = self._hang_after, None
        if hang is not None:
            hang.until.wait()

    def abort_transaction(self, timeout: float | None = None) -> None:
        self._usable()
        self._injected("abort")
        if self.txn_state not in ("in_txn", "abortable"):
            raise _state_error(f"abort_transaction in state {self.txn_state}")
        with self._lock:
            purged, self._queue = self._queue, []
        for q in purged:
            if q.on_delivery is not None:
                message = Message(topic=q.topic, key=q.key, value=q.value)
                q.on_delivery(KafkaError(KafkaError._PURGE_QUEUE, "purged by abort"), message)
        self.broker.end_transaction(self._txid(), self._epoch, commit=False)
        self.txn_state, self._txn_error = "ready", None

    def _abortable(self) -> None:
        if self.txn_state == "abortable":
            error = self._txn_error or KafkaError(KafkaError._STATE, "abortable")
            raise KafkaException(
                KafkaError(
                    error.code(), f"transaction must be aborted: {error.str()}", txn_requires_abort=True
                )
            )

    # -- delivery ----------------------------------------------------------------------------

    def stall(self) -> None:
        """The broker is unreachable: messages stay queued, with no delivery report."""
        self._stalled.set()

    def unstall(self) -> None:
        self._stalled.clear()

    def fail_next(self, topic: str | None = None, error: KafkaError | None = None, times: int = 1) -> None:
        """Make the next `times` deliveries (to `topic`, or to any topic) fail with `error`."""
        err = error or KafkaError(KafkaError._MSG_TIMED_OUT, "delivery failed (in-memory)")
        with self._lock:
            self._failures.extend([(topic, err)] * times)

    def produce(
        self,
        topic: str,
        value: str | bytes | None = None,
        key: str | bytes | None = None,
        partition: int = -1,
        on_delivery: Callable[[KafkaError | None, Message], None] | None = None,
        headers: Headers = None,
        **_: Any,
    ) -> None:
        if self.transactional:
            self._usable()
            if self.txn_state not in ("in_txn", "abortable"):
                raise _state_error("produce outside a transaction")
        size = wire_size(Outgoing(topic, _bytes(key), _bytes(value), headers))
        if self.max_message_bytes is not None and size > self.max_message_bytes:
            raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "Broker: Message size too large"))
        with self._lock:
            self.produce_calls += 1
            if self.queue_limit is not None and len(self._queue) >= self.queue_limit:
                raise BufferError("Local: Queue full")
            self._queue.append(
                _Queued(
                    topic,
                    _bytes(value),
                    _bytes(key),
                    headers,
                    None if partition < 0 else partition,
                    on_delivery,
                )
            )

    def __len__(self) -> int:
        with self._lock:
            return len(self._queue)

    def poll(self, timeout: float = 0) -> int:
        if self._stalled.is_set():
            time.sleep(max(0.0, min(timeout, 0.05)))
            return 0
        return self._deliver()

    def flush(self, timeout: float = -1) -> int:
        if self._stalled.is_set():
            # Like librdkafka's flush() against a broker that is down: waits, delivers nothing.
            time.sleep(max(0.0, min(timeout if timeout >= 0 else 0.05, 0.05)))
            return len(self)
        self._deliver()
        return len(self)

    def _failure_for(self, q: _Queued) -> KafkaError | None:
        for i, (wanted, error) in enumerate(self._failures):
            if wanted is None or wanted == q.topic:
                del self._failures[i]
                return error
        limit = self.broker.topic_limits.get(q.topic)
        if limit is not None and wire_size(Outgoing(q.topic, q.key, q.value, q.headers)) > limit:
            return KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "Broker: Message size too large")
        return None

    def _deliver(self) -> int:
        with self._lock:
            queued, self._queue = self._queue, []
            outcomes: list[tuple[_Queued, KafkaError | None]] = [(q, self._failure_for(q)) for q in queued]
        in_txn = self.txn_state in ("in_txn", "abortable")
        for q, error in outcomes:
            if error is None and self.txn_state == "abortable":
                error = KafkaError(KafkaError._STATE, "the transaction is in an abortable state")
            if error is None:
                message = self.broker.append(
                    q.topic, q.value, q.key, q.headers, q.partition, self.transactional_id if in_txn else None
                )
                self.delivered.append(message)
            else:
                message = Message(
                    topic=q.topic, key=q.key, value=q.value, headers=list(q.headers or []) or None
                )
                self.failed.append((q.topic, error))
                if in_txn and self.txn_state == "in_txn":
                    # A message that failed for good makes its transaction abortable.
                    self.txn_state, self._txn_error = "abortable", error
            if q.on_delivery is not None:
                q.on_delivery(error, message)
        return len(outcomes)

    def delivered_to(self, topic: str) -> list[Message]:
        return [m for m in self.delivered if m.topic() == topic]


class MemoryStore(ObjectStore):
    """processors.storage.ObjectStore over a dict: its primitive calls are replaced, everything
    built on them (claims, content addressing, checked reads) is ObjectStore's own. A missing
    object is the S3 error the SDK raises; fail_next() makes the next calls raise (storage down)."""

    def __init__(self, bucket: str = "lightbox") -> None:
        self.bucket = bucket
        self.client = None  # type: ignore[assignment]
        self.objects: dict[str, bytes] = {}
        self._failures: list[BaseException] = []
        self._lock = threading.Lock()

    def fail_next(self, error: BaseException, times: int = 1) -> None:
        with self._lock:
            self._failures.extend([error] * times)

    def _maybe_fail(self) -> None:
        with self._lock:
            error = self._failures.pop(0) if self._failures else None
        if error is not None:
            raise error

    def _missing(self, key: str) -> S3Error:
        return S3Error(None, "NoSuchKey", f"{key} does not exist", key, "", "", self.bucket, key)  # type: ignore[arg-type]

    def ensure_bucket(self) -> None:
        self._maybe_fail()

    def _upload(self, key: str, data: bytes, content_type: str, metadata: dict[str, str] | None) -> None:
        self._maybe_fail()
        with self._lock:
            self.objects[key] = bytes(data)

    def get_bytes(self, key: str) -> bytes:
        self._maybe_fail()
        with self._lock:
            if key not in self.objects:
                raise self._missing(key)
            return self.objects[key]

    def exists(self, key: str) -> bool:
        self._maybe_fail()
        with self._lock:
            return key in self.objects

    def metadata(self, key: str) -> dict[str, str]:
        self.get_bytes(key)
        return {}

    def delete(self, key: str) -> None:
        self._maybe_fail()
        with self._lock:
            self.objects.pop(key, None)

    def copy(self, source_key: str, dest_key: str) -> None:
        data = self.get_bytes(source_key)
        with self._lock:
            self.objects[dest_key] = data

    def list_keys(self, prefix: str) -> Iterator[str]:
        self._maybe_fail()
        with self._lock:
            keys = sorted(k for k in self.objects if k.startswith(prefix))
        yield from keys
