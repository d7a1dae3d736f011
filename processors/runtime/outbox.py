"""The outbox: what one input leads to, encoded, then produced and confirmed for a whole batch.

For each input record the runner ends with a Pending: the side effects still running (uploads)
and the messages to send (outputs, pipeline events, dead letters), already Avro-encoded and under
their broker topic names. Encoding here is also where an outcome is checked:
- an output to a topic the stage does not declare is refused: the input is dead-lettered with
  UndeclaredOutput (pipeline events and dead letters are the runtime's own and always allowed);
- an output that does not fit its schema is the handler's bug on this input: dead-lettered too.

Pipeline event ids are deterministic (uuid5 of the job, stage, state, attempt, reason,
discriminator and the input's topic/partition/offset), so a redelivered batch re-emits the same ids
and ClickHouse de-duplicates them, while a new message about the same job is a new event.

deliver() sends a batch's messages through the one produce loop
(kafka_clients.produce_and_confirm) and raises DeliveryFailed unless every one was acknowledged;
the runner commits only after it returns.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections import Counter
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any

from processors.kafka_clients import Outgoing, produce_and_confirm
from processors.metrics import StageMetrics
from processors.runtime.codec import Codec
from processors.runtime.dlq import DeadLetter, Source
from processors.runtime.errors import UndeclaredOutput
from processors.runtime.records import Event, InputRecord, Outcome, now_ms, to_millis
from schemas.serde import SerdeError
from schemas.topics import RUNTIME_TOPICS, Topic

EVENT_NAMESPACE = uuid.UUID("6f1f7c52-3a0e-4c59-9a57-1d1f3f0c9b11")
WORKER = f"{socket.gethostname()}:{os.getpid()}"
DELIVERY_TIMEOUT_S = 30.0


def source_of(record: InputRecord | None) -> str:
    """The input's place on the broker (logical topic), part of every event's identity."""
    return f"{record.topic.value}/{record.partition}/{record.offset}" if record is not None else ""


def event_id(stage: str, event: Event, source: str) -> str:
    identity = "|".join(
        [event.job_id, stage, event.state, str(event.attempt), event.reason, event.discriminator, source]
    )
    return str(uuid.uuid5(EVENT_NAMESPACE, identity))


@dataclass
class Pending:
    """Everything one input leads to: effects to await, then messages to produce."""

    effects: list[Awaitable[Any]] = field(default_factory=list)
    messages: list[Outgoing] = field(default_factory=list)


class Outbox:
    def __init__(
        self,
        stage: str,
        declared: Sequence[Topic],
        codec: Codec,
        metrics: StageMetrics,
        log: logging.Logger,
    ) -> None:
        self.stage = stage
        self.declared = tuple(declared)
        self.allowed = frozenset(declared) | RUNTIME_TOPICS
        self.codec = codec
        self.topics = codec.topics
        self.metrics = metrics
        self.log = log

    # -- encoding ----------------------------------------------------------------------------

    def outcome(self, record: InputRecord, outcome: Outcome, duration_ms: float) -> Pending:
        if outcome.dead_letter is not None:
            at = now_ms()
            letter = self.letter_for(record, outcome.dead_letter, outcome.attempts, at, at)
            pending = self.dead_letter(letter, record, before=outcome.events, duration_ms=duration_ms)
            pending.effects = list(outcome.effects)
            return pending
        try:
            self._check_declared(outcome)
            messages = [
                Outgoing(
                    self.topics(output.topic),
                    output.key.encode(),
                    self.codec.encode(output.topic, output.value),
                    None,
                    output.partition,
                )
                for output in outcome.outputs
            ]
        except (UndeclaredOutput, SerdeError) as exc:
            # The handler built something it may not send: a bug on this input, so it is poison.
            self.log.error("dead-lettering an invalid outcome: %s", exc, extra={"reason": type(exc).__name__})
            at = now_ms()
            return self.dead_letter(self.letter_for(record, exc, 1, at, at), record)
        messages.extend(self.events(outcome.events, record, duration_ms))
        return Pending(list(outcome.effects), messages)

    def _check_declared(self, outcome: Outcome) -> None:
        for output in outcome.outputs:
            if output.topic not in self.allowed:
                declared = ", ".join(t.value for t in self.declared) or "none"
                raise UndeclaredOutput(
                    f"stage {self.stage!r} may not produce to {output.topic.value!r}: "
                    f"not among its declared outputs ({declared})"
                )

    def events(self, events: list[Event], record: InputRecord | None, duration_ms: float) -> list[Outgoing]:
        serde = self.codec.serde("pipeline_event")
        source = source_of(record)
        encoded = []
        for event in events:
            attributes = dict(event.attributes)
            if source:
                attributes.setdefault("source", source)
            value = {
                "event_id": event_id(self.stage, event, source),
                "job_id": event.job_id,
                "stage": self.stage,
                "state": event.state,
                "at": now_ms(),
                "duration_ms": float(duration_ms),
                "reason": event.reason,
                "detail": event.detail[:2000],
                "attempt": event.attempt,
                "attributes": attributes,
                "submitted_at": to_millis(event.submitted_at),
                "worker": WORKER,
            }
            encoded.append(
                Outgoing(self.topics(Topic.PIPELINE_EVENTS), event.job_id.encode(), serde.encode(value))
            )
        return encoded

    # -- dead letters ------------------------------------------------------------------------

    def letter_for(
        self, record: InputRecord, error: BaseException, attempts: int, first_ms: int, last_ms: int
    ) -> DeadLetter:
        source = Source.of_record(record, self.topics(record.topic))
        return DeadLetter.of(source, self.stage, error, attempts, first_ms, last_ms)

    def undecodable(self, message: Any, error: SerdeError) -> Pending:
        at = now_ms()
        letter = DeadLetter.of(Source.of_message(message), self.stage, error, 1, at, at)
        self.log.error(
            "dead-lettering undecodable message: %s",
            error,
            extra={
                "reason": letter.error_class,
                "topic": letter.original_topic,
                "partition": letter.original_partition,
                "offset": letter.original_offset,
            },
        )
        return self.dead_letter(letter, None)

    def dead_letter(
        self,
        letter: DeadLetter,
        record: InputRecord | None,
        before: list[Event] | None = None,
        duration_ms: float = 0.0,
    ) -> Pending:
        """The letter, its `dead_lettered` event, and `before`: the events the record had
        already led to (retries, the batch handler's own failure event)."""
        self.metrics.dead_lettered.labels(self.stage).inc()
        self.metrics.failures.labels(self.stage, letter.error_class).inc()
        value = self.codec.serde("dlq_envelope").encode(letter.record())
        messages = self.events(list(before or []), record, duration_ms)
        messages.append(
            Outgoing(self.topics(Topic.PIPELINE_DLQ), letter.key_text.encode(), value, letter.headers())
        )
        messages.extend(self.events([letter.event(record.job_id if record else None)], record, 0.0))
        return Pending(messages=messages)

    # -- delivery ----------------------------------------------------------------------------

    async def deliver(self, producer: Any, pendings: list[Pending]) -> None:
        """Produce every message of the batch and wait until the broker acknowledged each."""
        messages = [m for pending in pendings for m in pending.messages]
        await asyncio.to_thread(produce_and_confirm, producer, messages, DELIVERY_TIMEOUT_S)
        for topic, count in Counter(m.topic for m in messages).items():
            self.metrics.produced.labels(self.stage, self.topics.logical(topic).value).inc(count)
