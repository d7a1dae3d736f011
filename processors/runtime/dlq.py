"""Dead letters: the original bytes plus where they came from and why they failed.

A message goes to pipeline.dlq when it cannot be decoded, when its handler raised a permanent
error or ran out of attempts, when a batch handler gave up on it alone (Outcome.dead_letter), when
its outcome names a topic the stage does not declare, or when an output it led to could not be
produced for what it is (too large, refused by the broker). The letter is the dlq_envelope record;
its context also travels as `dlq.*` headers, so tools can filter without decoding, and every
letter comes with a `dead_lettered` pipeline event. The runner's outbox encodes both.

`dlq.fault` says whose fault the runtime judged it: `record` (the message's own), or `unknown`
(an error it could not place, that kept failing). `dlq.error.kind` is how errors.classify() names
the error itself: a `dependency` error is only ever dead-lettered when it kept failing while other
records of the same batch succeeded (retry.py), so its fault is still `record`.

A letter too large to carry its original (a message near the size limit, plus the envelope) is
offloaded: the original value (and a key over TEXT.inline_key) is stored in object storage under
dead_letter_key(), the envelope carries none of it, and `dlq.original.ref` (and the envelope's
`original_ref` field, once the schema has it) says where it is: s3://<bucket>/<key>, with
`dlq.original.size` and `dlq.original.sha256` to check it by.

A message the dead-letter tool replayed (gateway/ops/dlq.py) carries REPLAY_ID_HEADER and
REPLAY_COUNT_HEADER; if it fails again, its new letter carries them on as `dlq.replay.id` and
`dlq.replays`, so the tool knows how often it was replayed and parks it after `dlq.max_replays`
(is_parked, the one rule). A letter nobody replayed has no such headers: replays 0.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from dataclasses import dataclass, replace
from typing import Any

from processors.runtime.errors import classify
from processors.runtime.records import Event, InputRecord
from processors.runtime.sizes import TEXT, clip
from processors.storage_keys import dead_letter_key

HEADER_PREFIX = "dlq."
# Set by the dead-letter tool on each message it replays (not dlq.*: they travel on the original
# topic, where the stage reads them).
REPLAY_ID_HEADER = "lightbox.replay-id"
REPLAY_COUNT_HEADER = "lightbox.replay-count"
REPLAYED_FROM_HEADER = "lightbox.replayed-from"


def replay_marks(headers: list[tuple[str, bytes]] | None) -> tuple[int, str]:
    """(replay count, replay id) of a message the tool replayed; (0, "") otherwise."""
    count, replay_id = 0, ""
    for key, value in headers or []:
        text = (value or b"").decode("utf-8", "replace")
        if key == REPLAY_COUNT_HEADER:
            count = int(text) if text.isdigit() else 0
        elif key == REPLAY_ID_HEADER:
            replay_id = clip(text, TEXT.header_value)
    return count, replay_id


def is_parked(replays: int, max_replays: int) -> bool:
    """A letter replayed max_replays times that failed again is parked: not replayed any more."""
    return replays >= max_replays


@dataclass(frozen=True)
class Source:
    """The message a letter is about, as it was on the broker (prefixed topic name, raw bytes)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    # How often the dead-letter tool replayed it, and the last replay's id (replay_marks).
    replays: int = 0
    replay_id: str = ""

    @classmethod
    def of_record(cls, record: InputRecord, topic_name: str) -> Source:
        replays, replay_id = replay_marks(record.headers)
        return cls(
            topic_name, record.partition, record.offset, record.key, record.raw_value, replays, replay_id
        )

    @classmethod
    def of_message(cls, message: Any) -> Source:
        replays, replay_id = replay_marks(message.headers())
        return cls(
            message.topic(),
            message.partition(),
            message.offset(),
            message.key(),
            message.value(),
            replays,
            replay_id,
        )

    @property
    def where(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"


@dataclass
class DeadLetter:
    original_topic: str
    original_partition: int
    original_offset: int
    original_key: bytes | None
    original_value: bytes | None
    stage: str
    error_class: str
    error_message: str
    attempts: int
    first_failure_at: int  # epoch millis
    last_failure_at: int
    # Where the original is when it was too large to carry (s3://bucket/key); None: inline.
    original_ref: str | None = None
    fault: str = "record"
    error_kind: str = ""
    # Of the offloaded original value, for whoever fetches it.
    original_size: int | None = None
    original_sha256: str = ""
    # Of a replayed message that failed again (Source.replays): headers only.
    replays: int = 0
    replay_id: str = ""

    @classmethod
    def of(
        cls,
        source: Source,
        stage: str,
        error: BaseException,
        attempts: int,
        first_ms: int,
        last_ms: int,
        fault: str = "record",
    ) -> DeadLetter:
        return cls(
            original_topic=source.topic,
            original_partition=source.partition,
            original_offset=source.offset,
            original_key=source.key,
            original_value=source.value,
            stage=stage,
            error_class=type(error).__name__,
            error_message=clip(str(error), TEXT.error_message),
            attempts=attempts,
            first_failure_at=first_ms,
            last_failure_at=last_ms,
            fault=fault,
            error_kind=classify(error).value,
            replays=source.replays,
            replay_id=source.replay_id,
        )

    def key_for(self, part: str) -> str:
        return dead_letter_key(
            self.original_topic, self.original_partition, self.original_offset, self.stage, part
        )

    def offloaded(self, bucket: str) -> tuple[DeadLetter, list[tuple[str, bytes]]]:
        """This letter without its original, and the objects to store for it (key, bytes)."""
        objects: list[tuple[str, bytes]] = []
        value = self.original_value or b""
        objects.append((self.key_for("value"), value))
        key = self.original_key
        if key is not None and len(key) > TEXT.inline_key:
            objects.append((self.key_for("key"), key))
            key = None
        letter = replace(
            self,
            original_key=key,
            original_value=None,
            original_ref=f"s3://{bucket}/{self.key_for('value')}",
            original_size=len(value),
            original_sha256=hashlib.sha256(value).hexdigest(),
        )
        return letter, objects

    @property
    def source(self) -> str:
        return f"{self.original_topic}/{self.original_partition}/{self.original_offset}"

    @property
    def key_text(self) -> str:
        return clip((self.original_key or b"").decode("utf-8", "replace"), TEXT.header_value)

    def event(self, job_id: str | None) -> Event:
        """The `dead_lettered` pipeline event. Without a job id (undecodable bytes) the key
        stands in, or else where the message was."""
        return Event(
            job_id or self.key_text or self.source,
            "dead_lettered",
            reason=self.error_class,
            detail=clip(self.error_message, 500),
            attributes={
                "dlq_source": self.source,
                "attempts": str(self.attempts),
                "fault": self.fault,
                **({"original_ref": self.original_ref} if self.original_ref else {}),
                **({"replays": str(self.replays), "replay_id": self.replay_id} if self.replays else {}),
            },
        )

    def record(self, fields: Collection[str] | None = None) -> dict[str, Any]:
        """The dlq_envelope record; with `fields` (the writer schema's), only what it has, so the
        pointer field travels once the schema holds it (dlq_envelope v1 does not)."""
        everything = {k: v for k, v in self.__dict__.items() if k not in _HEADER_ONLY}
        if fields is None:
            if self.original_ref is None:
                del everything["original_ref"]
            return everything
        return {k: v for k, v in everything.items() if k in fields}

    def headers(self) -> list[tuple[str, bytes]]:
        fields = {
            "original.topic": self.original_topic,
            "original.partition": str(self.original_partition),
            "original.offset": str(self.original_offset),
            "original.key": self.key_text,
            "stage": self.stage,
            "error.class": self.error_class,
            "error.message": clip(self.error_message, TEXT.header_value),
            "attempts": str(self.attempts),
            "first.failure.ms": str(self.first_failure_at),
            "last.failure.ms": str(self.last_failure_at),
        }
        fields["fault"] = self.fault
        if self.error_kind:
            fields["error.kind"] = self.error_kind
        if self.original_ref:
            fields["original.ref"] = self.original_ref
            fields["original.size"] = str(self.original_size)
            fields["original.sha256"] = self.original_sha256
        if self.replays:
            fields["replays"] = str(self.replays)
            fields["replay.id"] = self.replay_id
        return [(HEADER_PREFIX + k, v.encode()) for k, v in fields.items()]


# Known to the runtime and the headers, not envelope fields.
_HEADER_ONLY = frozenset({"fault", "error_kind", "original_size", "original_sha256", "replays", "replay_id"})


def parse_headers(headers: list[tuple[str, bytes]] | None) -> dict[str, str]:
    """The dlq.* headers of a dead-lettered message, without the prefix."""
    return {
        k[len(HEADER_PREFIX) :]: (v or b"").decode("utf-8", "replace")
        for k, v in headers or []
        if k.startswith(HEADER_PREFIX)
    }
