"""Dead-letter records: the original bytes plus where they came from and why they failed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from schemas.topics import Topic

HEADER_PREFIX = "dlq."


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

    def record(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def headers(self) -> list[tuple[str, bytes]]:
        fields = {
            "original.topic": self.original_topic,
            "original.partition": str(self.original_partition),
            "original.offset": str(self.original_offset),
            "original.key": (self.original_key or b"").decode("utf-8", "replace"),
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


DLQ_TOPIC = Topic.PIPELINE_DLQ
