"""The outbox: what one input leads to, encoded and checked, ready for delivery.py to produce.

For each input record the runner ends with a Pending: the side effects still running (uploads)
and the messages to send (outputs, pipeline events, dead letters), already Avro-encoded and under
their broker topic names. Encoding here is also where an outcome is checked:
- an output to a topic the stage does not declare is refused: the input is dead-lettered with
  UndeclaredOutput (pipeline events and dead letters are the runtime's own and always allowed);
- an output that does not fit its schema is the handler's bug on this input: dead-lettered too;
- an output or event larger than the producer or the broker accepts (sizes.py) is never sent:
  the input is dead-lettered with OutputTooLarge and a `failed` event for its job, and its
  partition moves on. refused() does the same for a message the broker refused after the fact;
- a dead letter too large to carry its original stores the original in object storage (the
  Pending's uploads, done by delivery.py before producing) and carries a pointer (dlq.py).
Event reasons, details and attributes are clipped to bounded sizes (sizes.TEXT) whatever the
handler put in them.

Pipeline event ids are deterministic (uuid5 of the job, stage, state, attempt, reason,
discriminator and the input's topic/partition/offset), so a redelivered batch re-emits the same ids
and ClickHouse de-duplicates them, while a new message about the same job is a new event.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any

from processors.credits.accounts import job_credits
from processors.credits.settlement import settlement_for
from processors.job_states import LEDGER
from processors.kafka_clients import Outgoing
from processors.metrics import StageMetrics
from processors.runtime.codec import Codec
from processors.runtime.dlq import DeadLetter, Source
from processors.runtime.errors import OutputRefused, OutputTooLarge, UndeclaredOutput
from processors.runtime.feed import Gap
from processors.runtime.records import Event, InputRecord, Outcome, now_ms, to_millis
from processors.runtime.sizes import TEXT, MessageLimits, clip, clip_attributes, wire_size
from schemas.serde import SerdeError
from schemas.topics import RUNTIME_TOPICS, Topic

EVENT_NAMESPACE = uuid.UUID("6f1f7c52-3a0e-4c59-9a57-1d1f3f0c9b11")
WORKER = f"{socket.gethostname()}:{os.getpid()}"


def source_of(record: InputRecord | None) -> str:
    """The input's place on the broker (logical topic), part of every event's identity."""
    return f"{record.topic.value}/{record.partition}/{record.offset}" if record is not None else ""


def event_id(stage: str, event: Event, source: str) -> str:
    identity = "|".join(
        [event.job_id, stage, event.state, str(event.attempt), event.reason, event.discriminator, source]
    )
    return str(uuid.uuid5(EVENT_NAMESPACE, identity))


def with_settlements(events: list[Event], record: InputRecord | None) -> list[Event]:
    """The events, each one that ends a job holding a credit reservation followed by its
    settlement (processors/credits/settlement.py): here, where every event is sent, so no stage
    can end a job and forget it. The reservation is the event's (job_event copies it) or, for
    the runtime's own events (dead letters, refused outputs), the input job's."""
    result: list[Event] = []
    for event in events:
        result.append(event)
        credits = event.credits
        if credits is None and record is not None and record.value.get("job_id") == event.job_id:
            credits = job_credits(record.value)
        settled = settlement_for(event, credits)
        if settled is not None:
            result.append(settled)
    return result


@dataclass
class Pending:
    """Everything one input leads to: effects to await, then messages to produce."""

    effects: list[Awaitable[Any]] = field(default_factory=list)
    messages: list[Outgoing] = field(default_factory=list)
    # The input it is about (None for undecodable bytes and runtime-only events): what a refused
    # message dead-letters.
    record: InputRecord | None = None
    # Set when this Pending is that input's dead letter.
    letter: DeadLetter | None = None
    # Objects to store before producing (an offloaded original): (key, bytes).
    uploads: list[tuple[str, bytes]] = field(default_factory=list)


class Outbox:
    def __init__(
        self,
        stage: str,
        declared: Sequence[Topic],
        codec: Codec,
        metrics: StageMetrics,
        log: logging.Logger,
        limits: MessageLimits,
        bucket: str = "",
    ) -> None:
        self.stage = stage
        self.declared = tuple(declared)
        self.allowed = frozenset(declared) | RUNTIME_TOPICS
        self.codec = codec
        self.topics = codec.topics
        self.metrics = metrics
        self.log = log
        self.limits = limits
        self.bucket = bucket

    # -- encoding ----------------------------------------------------------------------------

    def outcome(self, record: InputRecord, outcome: Outcome, duration_ms: float) -> Pending:
        if outcome.dead_letter is not None:
            at = now_ms()
            letter = self.letter_for(record, outcome.dead_letter, outcome.attempts, at, at)
            return self.dead_letter(
                letter, record, before=outcome.events, duration_ms=duration_ms, effects=outcome.effects
            )
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
            return self.dead_letter(self.letter_for(record, exc, 1, at, at), record, effects=outcome.effects)
        messages.extend(self.events(outcome.events, record, duration_ms))
        pending = Pending(list(outcome.effects), messages, record)
        for message in messages:
            if not self.limits.fits(message):
                size, limit = wire_size(message), self.limits.limit(message.topic)
                error = OutputTooLarge(
                    f"a {self.topics.logical(message.topic).value} record of {size} bytes is over the "
                    f"{limit}-byte limit"
                )
                return self.refused(pending, error, "output_too_large")
        return pending

    def _check_declared(self, outcome: Outcome) -> None:
        for output in outcome.outputs:
            if output.topic not in self.allowed:
                declared = ", ".join(t.value for t in self.declared) or "none"
                raise UndeclaredOutput(
                    f"stage {self.stage!r} may not produce to {output.topic.value!r}: "
                    f"not among its declared outputs ({declared})"
                )

    def events(self, events: list[Event], record: InputRecord | None, duration_ms: float) -> list[Outgoing]:
        serde = self.codec.serde(Topic.PIPELINE_EVENTS)
        source = source_of(record)
        encoded = []
        for event in with_settlements(events, record):
            attributes = clip_attributes(event.attributes)
            if source:
                attributes.setdefault("source", source)
            job_id = clip(event.job_id, TEXT.job_id)
            value = {
                "event_id": event_id(self.stage, event, source),
                "job_id": job_id,
                "stage": self.stage,
                "state": event.state,
                "at": now_ms(),
                "duration_ms": 0.0 if event.state in LEDGER else float(duration_ms),
                "reason": clip(event.reason, TEXT.reason),
                "detail": clip(event.detail, TEXT.detail),
                "attempt": event.attempt,
                "attributes": attributes,
                "submitted_at": to_millis(event.submitted_at),
                "worker": WORKER,
            }
            encoded.append(Outgoing(self.topics(Topic.PIPELINE_EVENTS), job_id.encode(), serde.encode(value)))
        return encoded

    def gap(self, gap: Gap) -> Pending:
        """The `offset_reset` event of a partition that lost messages to retention."""
        event = Event(
            f"{gap.topic}/{gap.partition}",
            "offset_reset",
            reason="retention",
            detail=(
                f"{gap.lost} message(s) at offsets {gap.start}..{gap.end - 1} of {gap.topic}/{gap.partition} "
                f"were deleted before {self.stage} read them"
            ),
            attributes={
                "topic": gap.topic,
                "partition": str(gap.partition),
                "from": str(gap.start),
                "to": str(gap.end),
                "lost": str(gap.lost),
            },
            discriminator=f"{gap.start}-{gap.end}",
        )
        return Pending(messages=self.events([event], None, 0.0))

    # -- dead letters ------------------------------------------------------------------------

    def letter_for(
        self,
        record: InputRecord,
        error: BaseException,
        attempts: int,
        first_ms: int,
        last_ms: int,
        fault: str = "record",
    ) -> DeadLetter:
        source = Source.of_record(record, self.topics(record.topic))
        return DeadLetter.of(source, self.stage, error, attempts, first_ms, last_ms, fault)

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
        effects: list[Awaitable[Any]] | None = None,
        count: bool = True,
    ) -> Pending:
        """The letter, its `dead_lettered` event, and `before`: the events the record had
        already led to (the batch handler's own failure event, a `failed` event). A letter too
        large to carry its original stores it instead (uploads) and points at it."""
        if count:
            self.metrics.dead_lettered.labels(self.stage).inc()
            self.metrics.failures.labels(self.stage, letter.error_class).inc()
        uploads: list[tuple[str, bytes]] = []
        message = self._letter_message(letter)
        if not self.limits.fits(message) and letter.original_ref is None:
            letter, uploads = letter.offloaded(self.bucket)
            message = self._letter_message(letter)
            self.metrics.offloaded_letters.labels(self.stage).inc()
            self.log.warning(
                "dead letter for %s too large to carry its original: stored at %s",
                letter.source,
                letter.original_ref,
            )
        messages = self.events(list(before or []), record, duration_ms)
        if self.limits.fits(message):
            messages.append(message)
        else:
            self.log.error(
                "dead letter for %s does not fit even without its original; not sent", letter.source
            )
        messages.extend(self.events([letter.event(record.job_id if record else None)], record, 0.0))
        return Pending(list(effects or []), messages, record, letter, uploads)

    def _letter_message(self, letter: DeadLetter) -> Outgoing:
        serde = self.codec.serde(Topic.PIPELINE_DLQ)
        value = serde.encode(letter.record(serde.writer_fields()))
        key = letter.key_text.encode()
        return Outgoing(self.topics(Topic.PIPELINE_DLQ), key, value, letter.headers())

    def refused(self, pending: Pending, error: OutputTooLarge | OutputRefused, reason: str) -> Pending:
        """What replaces a Pending one of whose messages cannot be produced for what it is: its
        input's dead letter (with a `failed` event for the job); for a dead letter, the same letter
        with its original stored aside; past that, nothing (logged)."""
        self.metrics.refused_outputs.labels(self.stage).inc()
        if pending.letter is not None:
            if pending.letter.original_ref is None:
                self.log.warning(
                    "dead letter for %s refused (%s): storing its original aside",
                    pending.letter.source,
                    error,
                )
                letter, uploads = pending.letter.offloaded(self.bucket)
                replacement = self.dead_letter(letter, pending.record, count=False)
                replacement.uploads = uploads
                self.metrics.offloaded_letters.labels(self.stage).inc()
                return replacement
            self.log.error(
                "dead letter for %s refused even without its original: %s", pending.letter.source, error
            )
            return Pending()
        if pending.record is None:
            self.log.error("runtime events refused by the broker, not sent: %s", error)
            return Pending()
        record = pending.record
        self.log.error(
            "dead-lettering %s: %s", source_of(record), error, extra={"reason": type(error).__name__}
        )
        failed = Event(
            record.job_id,
            "failed",
            reason=reason,
            detail=str(error),
            attempt=int(record.value.get("attempt") or 0),
            submitted_at=record.value.get("submitted_at"),
        )
        at = now_ms()
        letter = self.letter_for(record, error, 1, at, at)
        return self.dead_letter(letter, record, before=[failed], effects=pending.effects)
