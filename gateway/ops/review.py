"""Reviewer decisions go to review.decisions; the publish stage acts on them."""

from __future__ import annotations

import time

from confluent_kafka import Producer

from gateway.ops.entry import check_review
from processors.config import Settings
from processors.kafka_clients import make_producer, produce_and_confirm
from processors.runtime.codec import Codec
from schemas.topics import Topic, TopicNames


def submit_decision(
    settings: Settings,
    job_id: str,
    decision: str,
    reviewer: str,
    reason: str,
    producer: Producer | None = None,
) -> None:
    """producer: a long-lived caller's own (the HTTP gateway keeps one); else one for this call.

    Raises EntryError (a ValueError) for a job id, reviewer or reason over its limit
    (gateway/ops/entry.py): the CLI and the HTTP route check first, this is for any other caller."""
    if decision not in ("APPROVE", "REJECT"):
        raise ValueError(f"decision must be APPROVE or REJECT, not {decision!r}")
    check_review(settings.review, job_id, reviewer, reason)
    value = Codec.of(settings).encode(
        Topic.REVIEW_DECISIONS,
        {
            "job_id": job_id,
            "decision": decision,
            "reviewer": reviewer,
            "reason": reason,
            "decided_at": int(time.time() * 1000),
        },
    )
    topic = TopicNames(settings.kafka.topic_prefix)(Topic.REVIEW_DECISIONS)
    # Raises DeliveryFailed (a RuntimeError) unless the broker acknowledged the decision.
    if producer is None:  # not `producer or ...`: an idle Producer is falsy (len() is its queue)
        producer = make_producer(settings)
    produce_and_confirm(producer, [(topic, job_id.encode(), value, None)])
