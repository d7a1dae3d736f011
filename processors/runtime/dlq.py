"""Dead letters: the original bytes plus where they came from and why they failed.

A message goes to pipeline.dlq when it cannot be decoded, when its handler raised a permanent
error or ran out of attempts, when a batch handler gave up on it alone (Outcome.dead_letter), or
when its outcome names a topic the stage does not declare. The letter is the dlq_envelope record;
its context also travels as `dlq.*` headers, so tools can filter without decoding, and every
letter comes with a `dead_lettered` pipeline event. The runner's outbox encodes both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from processors.runtime.records import Event, InputRecord

HEADER_PREFIX = "dlq."


@dataclass(frozen=True)
class Source:
    """The message a letter is about, as it was on the broker (prefixed topic name, raw bytes)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None

    @classmethod
    def of_record(cls, record: InputRecord, topic_name: str) -> Source:
        return cls(topic_name, record.partition, record.offset, record.key, record.raw_value)

    @classmethod
    def of_message(cls, message: Any) -> Source:
        return cls(message.topic(), message.partition(), message.offset(), message.key(), message.value())

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

    @classmethod
    def of(
        cls, source: Source, stage: str, error: BaseException, attempts: int, first_ms: int, last_ms: int
    ) -> DeadLetter:
        return cls(
            original_topic=source.topic,
            original_partition=source.partition,
            original_offset=source.offset,
            original_key=source.key,
            original_value=source.value,
            stage=stage,
            error_class=type(error).__name__,
            error_message=str(error),
            attempts=attempts,
            first_failure_at=first_ms,
            last_failure_at=last_ms,
        )

    @property
    def source(self) -> str:
        return f"{self.original_topic}/{self.original_partition}/{self.original_offset}"

    @property
    def key_text(self) -> str:
        return (self.original_key or b"").decode("utf-8", "replace")

    def event(self, job_id: str | None) -> Event:
        """The `dead_lettered` pipeline event. Without a job id (undecodable bytes) the key
        stands in, or else where the message was."""
        return Event(
            job_id or self.key_text or self.source,
            "dead_lettered",
            reason=self.error_class,
            detail=self.error_message[:500],
            attributes={"dlq_source": self.source, "attempts": str(self.attempts)},
        )

    def record(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def headers(self) -> list[tuple[str, bytes]]:
        fields = {
            "original.topic": self.original_topic,
            "original.partition": str(self.original_partition),
            "original.offset": str(self.original_offset),
            "original.key": self.key_text,
            "stage": self.stage,
            "error.class": self.error_class,
            "error.message": self.error_message[:1000],
            "attempts": str(self.attempts),
            "first.failure.ms": str(self.first_failure_at),
            "last.failure.ms": str(self.last_failure_at),
        }
        return [(HEADER_PREFIX + k, v.encode()) for k, v in fields.items()]


def parse_headers(headers: list[tuple[str, bytes]] | None) -> dict[str, str]:
    """The dlq.* headers of a dead-lettered message, without the prefix."""
    return {
        k[len(HEADER_PREFIX) :]: (v or b"").decode("utf-8", "replace")
        for k, v in headers or []
        if k.startswith(HEADER_PREFIX)
    }
