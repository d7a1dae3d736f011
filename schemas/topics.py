"""The topics of the flow, the schema each one carries, and the configurable prefix."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Topic(StrEnum):
    CATALOG_EVENTS = "catalog.events"
    JOBS_ACCEPTED = "jobs.accepted"
    JOBS_REFERENCED = "jobs.referenced"
    GENERATION_REQUESTS = "generation.requests"
    GENERATION_RESULTS = "generation.results"
    ASSETS_SCORED = "assets.scored"
    ASSETS_READY = "assets.ready"
    ASSETS_PUBLISHED = "assets.published"
    REVIEW_DECISIONS = "review.decisions"
    PIPELINE_EVENTS = "pipeline.events"
    PIPELINE_DLQ = "pipeline.dlq"
    INTAKE_SEEN = "intake.seen"


SCHEMA_OF: dict[Topic, str] = {
    Topic.CATALOG_EVENTS: "catalog_event",
    Topic.JOBS_ACCEPTED: "job",
    Topic.JOBS_REFERENCED: "job",
    Topic.GENERATION_REQUESTS: "job",
    Topic.GENERATION_RESULTS: "job",
    Topic.ASSETS_SCORED: "job",
    Topic.ASSETS_READY: "job",
    Topic.ASSETS_PUBLISHED: "job",
    Topic.REVIEW_DECISIONS: "review_decision",
    Topic.PIPELINE_EVENTS: "pipeline_event",
    Topic.PIPELINE_DLQ: "dlq_envelope",
    Topic.INTAKE_SEEN: "seen_event",
}

# Written by the runtime for every stage (pipeline events, dead letters), whatever it declares.
RUNTIME_TOPICS: frozenset[Topic] = frozenset({Topic.PIPELINE_EVENTS, Topic.PIPELINE_DLQ})

# Topics that hold state, not a stream: compacted, so the latest value per key is kept forever.
COMPACTED: frozenset[Topic] = frozenset({Topic.INTAKE_SEEN})


@dataclass(frozen=True)
class TopicNames:
    """Maps logical topics to broker topic names under a prefix (e.g. "staging.")."""

    prefix: str = ""

    def __call__(self, topic: Topic) -> str:
        return f"{self.prefix}{topic.value}"

    def all(self) -> list[str]:
        return [self(t) for t in Topic]

    def logical(self, name: str) -> Topic:
        if not name.startswith(self.prefix):
            raise KeyError(f"{name} is not under prefix {self.prefix!r}")
        return Topic(name[len(self.prefix) :])
