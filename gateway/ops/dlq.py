"""SRE tools for pipeline.dlq: count, show, and replay dead letters to their original topics.

Replay re-produces the original key and bytes to the original topic, so the failing stage sees the
message again exactly as it first did (after the fix is deployed). Each replayed message carries
the `lightbox.replayed-from` header (the letter it came from), a replay id and its replay count
(processors/runtime/dlq.py): if it fails again, its new letter says how often it was replayed, and
after `dlq.max_replays` it is parked (never replayed again, is_parked). A replay ledger
(replay_ledger.py) makes a second replay of the same range send nothing; every replay, and every
parked letter met, is a pipeline event (`dlq_replayed`, `dlq_parked`) in the event log.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from gateway.ops.replay_ledger import Ledger
from processors.config import Settings
from processors.kafka_clients import Outgoing, make_producer, produce_and_confirm
from processors.metrics import StageMetrics
from processors.runtime.codec import Codec
from processors.runtime.dlq import (
    REPLAY_COUNT_HEADER,
    REPLAY_ID_HEADER,
    REPLAYED_FROM_HEADER,
    dead_letter_key,
    is_parked,
    parse_headers,
)
from processors.runtime.outbox import Outbox
from processors.runtime.records import Event, now_ms
from processors.runtime.sizes import MessageLimits
from processors.storage import ObjectStore
from schemas.topics import Topic, TopicNames

log = logging.getLogger(__name__)

# A partition whose next offset yields nothing for this long is left (the offset was deleted by
# retention, or the broker is unreachable): reading never hangs.
IDLE_TIMEOUT_S = 30.0


def _consumer(settings: Settings) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap,
            "group.id": "lightbox.dlq-tool",
            "enable.auto.commit": False,
            # Letters of an aborted transaction (a stage killed mid-batch) were never written for
            # the pipeline; replaying one would redo a record its successor already handled.
            "isolation.level": "read_committed",
            # An offset deleted meanwhile (retention) resumes at the oldest one left.
            "auto.offset.reset": "earliest",
        }
    )


def read(
    settings: Settings,
    partition: int | None = None,
    start: int | None = None,
    end: int | None = None,
    limit: int | None = None,
    idle_timeout_s: float = IDLE_TIMEOUT_S,
) -> Iterator[dict[str, Any]]:
    """Dead letters in offset order per partition, each with its dlq partition and offset.

    Offsets may have gaps (compaction, retention, transaction markers): a partition is done once
    the consumer's position passes the last offset asked for, or when nothing arrives for
    idle_timeout_s (logged as a warning)."""
    topic = TopicNames(settings.kafka.topic_prefix)(Topic.PIPELINE_DLQ)
    consumer = _consumer(settings)
    serde = Codec.of(settings).serde(Topic.PIPELINE_DLQ)
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        if metadata.error is not None:
            raise LookupError(f"{topic}: {metadata.error.str()}")
        if partition is not None and partition not in metadata.partitions:
            raise LookupError(f"{topic} has no partition {partition} (it has {len(metadata.partitions)})")
        partitions = sorted(metadata.partitions) if partition is None else [partition]
        yielded = 0
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            first = max(low, start if start is not None else low)
            last = min(high - 1, end if end is not None else high - 1)
            if first > last:
                continue
            consumer.assign([TopicPartition(topic, p, first)])
            position = first
            progress_at = time.monotonic()
            while position <= last:
                messages = consumer.consume(100, 1.0)
                for message in messages:
                    if message.error() or message.partition() != p or message.offset() < position:
                        continue
                    position = message.offset() + 1
                    progress_at = time.monotonic()
                    if message.offset() > last:
                        break
                    letter = serde.decode(message.value())
                    raw_headers = list(message.headers() or [])
                    letter["dlq_headers"] = parse_headers(raw_headers)
                    letter["dlq_raw_headers"] = raw_headers
                    letter["replays"] = _int(letter["dlq_headers"].get("replays"))
                    letter["dlq_partition"] = p
                    letter["dlq_offset"] = message.offset()
                    yield letter
                    yielded += 1
                    if limit is not None and yielded >= limit:
                        return
                if not messages:
                    # The consumer's position moves past offsets that hold no message for us
                    # (transaction markers, compacted records) without handing anything over.
                    (tp,) = consumer.position([TopicPartition(topic, p)])
                    if tp.offset > position:
                        position = tp.offset
                        progress_at = time.monotonic()
                if position <= last and time.monotonic() - progress_at > idle_timeout_s:
                    log.warning(
                        "dlq %s/%d: nothing at offset %d within %.0fs (last asked: %d); leaving it",
                        topic,
                        p,
                        position,
                        idle_timeout_s,
                        last,
                    )
                    break
            consumer.unassign()
    finally:
        consumer.close()


# The stage name the tool's own pipeline events carry.
TOOL_STAGE = "dlq-replay"
REPLAYED = "dlq_replayed"
PARKED = "dlq_parked"


def _int(text: str | None) -> int:
    return int(text) if text and text.isdigit() else 0


def dlq_topic(settings: Settings) -> str:
    return TopicNames(settings.kafka.topic_prefix)(Topic.PIPELINE_DLQ)


def spans(
    settings: Settings, partition: int | None = None, start: int | None = None, end: int | None = None
) -> list[tuple[int, int, int]]:
    """(partition, first, last) offsets a read of these bounds covers; for progress bars."""
    topic = dlq_topic(settings)
    consumer = _consumer(settings)
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        if metadata.error is not None:
            raise LookupError(f"{topic}: {metadata.error.str()}")
        if partition is not None and partition not in metadata.partitions:
            raise LookupError(f"{topic} has no partition {partition} (it has {len(metadata.partitions)})")
        partitions = sorted(metadata.partitions) if partition is None else [partition]
        found = []
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            first = max(low, start if start is not None else low)
            last = min(high - 1, end if end is not None else high - 1)
            if first <= last:
                found.append((p, first, last))
        return found
    finally:
        consumer.close()


def _when(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, int):
        return dt.datetime.fromtimestamp(value / 1000, dt.UTC).isoformat()
    return str(value)


def describe(letter: dict[str, Any], max_replays: int | None = None) -> str:
    key = (letter.get("original_key") or b"").decode("utf-8", "replace")
    replays = letter.get("replays", 0)
    marks = f" replays={replays}" if replays else ""
    if max_replays is not None and is_parked(replays, max_replays):
        marks += " PARKED"
    return (
        f"dlq {letter['dlq_partition']}/{letter['dlq_offset']}: {letter['original_topic']}/"
        f"{letter['original_partition']}/{letter['original_offset']} key={key} stage={letter['stage']} "
        f"attempts={letter['attempts']} first={_when(letter['first_failure_at'])}{marks} "
        f"{letter['error_class']}: {letter['error_message'][:200]}"
    )


# -- ls --------------------------------------------------------------------------------------


@dataclass
class Group:
    """The letters of one (partition, stage, error class)."""

    partition: int
    stage: str
    error_class: str
    count: int = 0
    parked: int = 0
    replayed: int = 0
    oldest: dict[str, Any] = field(default_factory=dict)  # offset, at (when it was dead-lettered)
    newest: dict[str, Any] = field(default_factory=dict)

    def add(self, letter: dict[str, Any], parked: bool, replayed: bool) -> None:
        self.count += 1
        self.parked += parked
        self.replayed += replayed
        mark = {"offset": letter["dlq_offset"], "at": _when(letter["last_failure_at"])}
        if not self.oldest:
            self.oldest = mark
        self.newest = mark  # read in offset order


def summarize(settings: Settings, idle_timeout_s: float = IDLE_TIMEOUT_S) -> dict[str, Any]:
    """Counts by partition, stage and error class, with the oldest and newest of each; parked
    letters (is_parked) and letters the ledger says were replayed are counted apart too."""
    store = ObjectStore(settings.storage)
    topic = dlq_topic(settings)
    ledgers: dict[int, Ledger] = {}
    groups: dict[tuple[int, str, str], Group] = {}
    for letter in read(settings, idle_timeout_s=idle_timeout_s):
        p = letter["dlq_partition"]
        ledger = ledgers.get(p) or ledgers.setdefault(p, Ledger.load(store, topic, p))
        where = (p, letter["stage"], letter["error_class"])
        group = groups.get(where) or groups.setdefault(where, Group(*where))
        parked = is_parked(letter["replays"], settings.dlq.max_replays)
        group.add(letter, parked, letter["dlq_offset"] in ledger.replayed)
    rows = [group.__dict__ for _, group in sorted(groups.items())]
    return {
        "topic": topic,
        "max_replays": settings.dlq.max_replays,
        "total": sum(g["count"] for g in rows),
        "parked": sum(g["parked"] for g in rows),
        "replayed": sum(g["replayed"] for g in rows),
        "groups": rows,
    }


# -- show ------------------------------------------------------------------------------------


def show(settings: Settings, partition: int, offset: int, idle_timeout_s: float = 15.0) -> dict[str, Any]:
    """One letter decoded: its envelope, every header, and the original record where its topic's
    schema decodes it (else why not). Raises LookupError when nothing is at that offset."""
    letters = list(read(settings, partition, offset, offset, limit=1, idle_timeout_s=idle_timeout_s))
    if not letters:
        raise LookupError(f"no dead letter at {dlq_topic(settings)}/{partition}/{offset}")
    letter = letters[0]
    key, value = letter.get("original_key"), letter.get("original_value")
    if value is None and letter["dlq_headers"].get("original.ref"):
        key, value = _stored_original(ObjectStore(settings.storage), letter, key)
    original: dict[str, Any] = {"key": (key or b"").decode("utf-8", "replace"), "size": len(value or b"")}
    try:
        logical = TopicNames(settings.kafka.topic_prefix).logical(letter["original_topic"])
        original["record"] = Codec.of(settings).serde(logical).decode(value)
    except Exception as exc:  # undecodable is often why it is here: say so, show the bytes
        original["undecodable"] = f"{type(exc).__name__}: {exc}"
        original["bytes_preview"] = (value or b"")[:200].decode("utf-8", "backslashreplace")
    envelope = {
        k: v
        for k, v in letter.items()
        if k not in ("original_value", "original_key", "dlq_headers", "dlq_raw_headers")
    }
    return {
        "envelope": envelope,
        "headers": {k: (v or b"").decode("utf-8", "replace") for k, v in letter["dlq_raw_headers"]},
        "parked": is_parked(letter["replays"], settings.dlq.max_replays),
        "original": original,
    }


# -- replay ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """Which letters a replay takes, besides its offset bounds."""

    stage: str | None = None
    error_class: str | None = None

    def takes(self, letter: dict[str, Any]) -> bool:
        return (self.stage is None or letter["stage"] == self.stage) and (
            self.error_class is None or letter["error_class"] == self.error_class
        )


@dataclass
class ReplayReport:
    replay_id: str
    dry_run: bool
    replayed: list[str] = field(default_factory=list)  # "p/o -> original topic"
    already: list[str] = field(default_factory=list)  # "p/o (replay id)"
    parked: list[str] = field(default_factory=list)  # "p/o: why"
    filtered: int = 0  # letters in range the selection did not take

    @property
    def count(self) -> int:
        return len(self.replayed)


# done, total: dlq offsets passed over, of those the bounds cover.
Progress = Callable[[int, int], None]


class _Pacer:
    """At most `rate` messages a second (None: as fast as the broker takes them)."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self.started = time.monotonic()
        self.sent = 0

    def wait(self, count: int) -> None:
        if self.rate:
            due = self.started + (self.sent + count) / self.rate
            time.sleep(max(0.0, due - time.monotonic()))
        self.sent += count


def replay(
    settings: Settings,
    partition: int | None = None,
    start: int | None = None,
    end: int | None = None,
    selection: Selection = Selection(),
    rate: float | None = None,
    dry_run: bool = False,
    reason: str = "operator replay",
    progress: Progress | None = None,
) -> ReplayReport:
    """Re-produce the selected dead letters not replayed before and not parked, in chunks of
    `dlq.replay_chunk`: each chunk's messages and `dlq_replayed` events are produced and
    acknowledged, then the chunk goes into the ledger. Raises DeliveryFailed unless the broker
    acknowledged a chunk (that chunk is not in the ledger, so the next replay sends it again)."""
    report = ReplayReport(uuid.uuid4().hex, dry_run)
    topic = dlq_topic(settings)
    store = ObjectStore(settings.storage)
    covered = spans(settings, partition, start, end)
    total = sum(last - first + 1 for _, first, last in covered)
    base = {p: first for p, first, _ in covered}
    done_before: dict[int, int] = {}
    events = _EventWriter(settings)
    producer = None if dry_run else make_producer(settings)
    pacer = _Pacer(rate)
    chunk_size = max(1, min(settings.dlq.replay_chunk, int(rate) if rate else settings.dlq.replay_chunk))
    ledgers: dict[int, Ledger] = {}
    chunk: list[tuple[dict[str, Any], Outgoing]] = []
    parked_events: list[Outgoing] = []

    def flush() -> None:
        nonlocal chunk, parked_events
        if producer is not None and (chunk or parked_events):
            pacer.wait(len(chunk))
            messages = [m for _, m in chunk]
            messages += events.replayed([letter for letter, _ in chunk], report.replay_id, reason)
            produce_and_confirm(producer, [*messages, *parked_events])
            by_partition: dict[int, list[int]] = {}
            for letter, _ in chunk:
                by_partition.setdefault(letter["dlq_partition"], []).append(letter["dlq_offset"])
            for p, offsets in by_partition.items():
                ledgers[p].record(store, report.replay_id, offsets, {"reason": reason, "at": _when(now_ms())})
        chunk, parked_events = [], []

    for letter in read(settings, partition=partition, start=start, end=end):
        p, offset = letter["dlq_partition"], letter["dlq_offset"]
        where = f"{p}/{offset}"
        ledger = ledgers.get(p) or ledgers.setdefault(p, Ledger.load(store, topic, p))
        if not selection.takes(letter):
            report.filtered += 1
        elif offset in ledger.replayed:
            report.already.append(f"{where} (replay {ledger.replayed[offset]})")
        elif is_parked(letter["replays"], settings.dlq.max_replays):
            report.parked.append(
                f"{where}: parked, replayed {letter['replays']} time(s) and failed again "
                f"(dlq.max_replays = {settings.dlq.max_replays})"
            )
            if not dry_run:
                parked_events.extend(events.parked(letter, settings.dlq.max_replays))
        else:
            report.replayed.append(f"{where} -> {letter['original_topic']}")
            if not dry_run:
                chunk.append((letter, _replay_message(settings, store, letter, report.replay_id)))
                if len(chunk) >= chunk_size:
                    flush()
        done_before[p] = offset - base.get(p, offset) + 1
        if progress is not None:
            progress(sum(done_before.values()), total)
    flush()
    if progress is not None:
        progress(total, total)
    return report


def _replay_message(
    settings: Settings, store: ObjectStore, letter: dict[str, Any], replay_id: str
) -> Outgoing:
    origin = f"dlq/{letter['dlq_partition']}/{letter['dlq_offset']}".encode()
    key, value = letter.get("original_key"), letter.get("original_value")
    if value is None and letter["dlq_headers"].get("original.ref"):
        key, value = _stored_original(store, letter, key)
    headers = [
        (REPLAYED_FROM_HEADER, origin),
        (REPLAY_ID_HEADER, replay_id.encode()),
        (REPLAY_COUNT_HEADER, str(letter["replays"] + 1).encode()),
    ]
    return Outgoing(letter["original_topic"], key, value, headers)


class _EventWriter:
    """The tool's pipeline events, encoded as every stage's are (the runtime's outbox)."""

    def __init__(self, settings: Settings) -> None:
        self.names = TopicNames(settings.kafka.topic_prefix)
        self.codec = Codec.of(settings)
        self.outbox = Outbox(
            TOOL_STAGE,
            (),
            self.codec,
            StageMetrics(TOOL_STAGE),
            log,
            MessageLimits(settings.stage.max_message_bytes),
        )

    def job_of(self, letter: dict[str, Any]) -> str:
        """The original's job id (or event id) where it decodes, else its key, else its place."""
        value = letter.get("original_value")
        if value is not None:
            try:
                record = self.codec.serde(self.names.logical(letter["original_topic"])).decode(value)
                if found := record.get("job_id") or record.get("event_id"):
                    return str(found)
            except Exception:  # undecodable originals are common here: fall back to the key
                pass
        key = (letter.get("original_key") or b"").decode("utf-8", "replace")
        return key or f"{letter['original_topic']}/{letter['original_partition']}/{letter['original_offset']}"

    def _attributes(self, letter: dict[str, Any]) -> dict[str, str]:
        return {
            "letter": f"{letter['dlq_partition']}/{letter['dlq_offset']}",
            "dlq_source": (
                f"{letter['original_topic']}/{letter['original_partition']}/{letter['original_offset']}"
            ),
            "failed_stage": letter["stage"],
            "error_class": letter["error_class"],
        }

    def replayed(self, letters: list[dict[str, Any]], replay_id: str, reason: str) -> list[Outgoing]:
        events = [
            Event(
                self.job_of(letter),
                REPLAYED,
                reason="dlq_replay",
                detail=reason,
                attributes={
                    **self._attributes(letter),
                    "replay_id": replay_id,
                    "replays": str(letter["replays"] + 1),
                },
                discriminator=f"{letter['dlq_partition']}/{letter['dlq_offset']}",
            )
            for letter in letters
        ]
        return self.outbox.events(events, None, 0.0)

    def parked(self, letter: dict[str, Any], max_replays: int) -> list[Outgoing]:
        event = Event(
            self.job_of(letter),
            PARKED,
            reason="max_replays",
            detail=f"replayed {letter['replays']} time(s), failed each time (dlq.max_replays {max_replays})",
            attributes={**self._attributes(letter), "replays": str(letter["replays"])},
            # One event per letter, however often a replay meets it: the same id each time.
            discriminator=f"{letter['dlq_partition']}/{letter['dlq_offset']}",
        )
        return self.outbox.events([event], None, 0.0)


def _stored_original(
    store: ObjectStore, letter: dict[str, Any], key: bytes | None
) -> tuple[bytes | None, bytes]:
    """The original of a letter too large to carry it, from the object its pointer names (the
    `dlq.original.ref` header), proven by the `dlq.original.sha256` header; a key too long for
    the letter lies beside it (dead_letter_key's `key` part)."""
    headers = letter["dlq_headers"]
    ref = headers["original.ref"]
    prefix = f"s3://{store.bucket}/"
    if not ref.startswith(prefix):
        raise ValueError(f"dead letter points at {ref}, outside this stack's bucket {store.bucket}")
    value = store.get_checked(ref[len(prefix) :], headers.get("original.sha256") or None)
    if key is None:
        key_object = dead_letter_key(
            letter["original_topic"],
            letter["original_partition"],
            letter["original_offset"],
            letter["stage"],
            "key",
        )
        try:
            key = store.get_bytes(key_object)
        except Exception as exc:  # no key object: the original had no key (or a short one)
            if "NoSuchKey" not in f"{type(exc).__name__} {exc}":
                raise
    return key, value
