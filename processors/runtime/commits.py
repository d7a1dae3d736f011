"""Committing a finished batch's offsets: one past the last message of each partition, never
backwards, and a failed commit is a warning, not a crash.

A commit is the last step of a batch (after its outputs were delivered), so a commit that fails
costs only redone work: whoever owns the partition next reads from the last commit and, keys and
event ids being deterministic, redoes the same effects.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, Protocol

from confluent_kafka import KafkaException, TopicPartition

Partition = tuple[str, int]


class MessageLike(Protocol):
    def error(self) -> Any: ...
    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...


def next_offsets(messages: Iterable[MessageLike]) -> dict[Partition, int]:
    """Per partition, the offset to commit after these messages: the highest one plus one."""
    offsets: dict[Partition, int] = {}
    for m in messages:
        if m.error():
            continue
        key = (str(m.topic()), int(m.partition() or 0))
        offsets[key] = max(offsets.get(key, -1), int(m.offset() or 0) + 1)
    return offsets


class Commits:
    """What this consumer has committed, so a batch never moves a partition's commit back."""

    def __init__(self, log: logging.Logger) -> None:
        self.log = log
        self.committed: dict[Partition, int] = {}

    def ahead(self, messages: Iterable[MessageLike]) -> dict[Partition, int]:
        """The offsets to commit after these messages, leaving out any that would move back."""
        # A batch re-fetched after a rebalance can trail one already committed; committing it
        # would only make the next owner redo work.
        return {k: o for k, o in next_offsets(messages).items() if o > self.committed.get(k, -1)}

    def mark(self, offsets: dict[Partition, int]) -> None:
        """Offsets committed another way (with a transaction)."""
        for key, offset in offsets.items():
            self.committed[key] = max(self.committed.get(key, -1), offset)

    def commit(self, consumer: Any, messages: Iterable[MessageLike]) -> None:
        """Commit synchronously; call it on the thread that owns the consumer."""
        self.commit_offsets(consumer, self.ahead(messages))

    def commit_offsets(self, consumer: Any, offsets: dict[Partition, int]) -> None:
        """Commit these offsets synchronously, on the thread that owns the consumer."""
        if not offsets:
            return
        try:
            results = consumer.commit(
                offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=False
            )
        except KafkaException as exc:
            # A rebalance took a partition away mid-batch: its new owner redoes the batch.
            self.log.warning("commit after a rebalance failed; the new owner will redo: %s", exc)
            return
        for tp in results or []:
            if tp.error is not None:
                self.log.warning(
                    "commit of %s/%d failed; that batch will be redone: %s", tp.topic, tp.partition, tp.error
                )
            else:
                self.committed[(tp.topic, tp.partition)] = tp.offset
