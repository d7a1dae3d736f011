"""Publishing catalog events from JSON lines: all-or-nothing unless asked to skip invalid lines."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from gateway.ops.entry import MAX_LINE_CHARS, catalog_bounds
from processors.config import Settings
from processors.kafka_clients import make_producer, produce_and_confirm
from processors.runtime.codec import Codec, TopicSerde
from schemas.serde import AvroSerde, SerdeError
from schemas.topics import Topic, TopicNames


@dataclass
class LineError:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass
class ParsedFile:
    events: list[tuple[int, dict[str, Any], bytes]] = field(default_factory=list)
    errors: list[LineError] = field(default_factory=list)


def _normalise(event: dict[str, Any]) -> dict[str, Any]:
    """JSON has no timestamp type: accept epoch millis or an ISO-8601 string for occurred_at."""
    occurred = event.get("occurred_at")
    if isinstance(occurred, str):
        try:
            parsed = dt.datetime.fromisoformat(occurred.replace("Z", "+00:00"))
        except ValueError as exc:
            raise SerdeError(f"field 'occurred_at' is not ISO-8601 or epoch millis: {occurred!r}") from exc
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.UTC)
        event["occurred_at"] = int(parsed.timestamp() * 1000)
    return event


def parse_lines(lines: Iterable[str], serde: AvroSerde | None = None) -> ParsedFile:
    serde = serde or AvroSerde("catalog_event")
    parsed = ParsedFile()
    for number, line in enumerate(lines, start=1):
        if len(line) > MAX_LINE_CHARS:
            parsed.errors.append(
                LineError(number, f"{len(line)} characters of JSON in one event; at most {MAX_LINE_CHARS}")
            )
            continue
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError as exc:
            parsed.errors.append(LineError(number, f"not valid JSON: {exc.msg} at column {exc.colno}"))
            continue
        if not isinstance(event, dict):
            parsed.errors.append(LineError(number, "expected a JSON object (one catalog event per line)"))
            continue
        try:
            event = _normalise(event)
            serde.validate(event)
            payload = serde.encode(event)
        except SerdeError as exc:
            parsed.errors.append(LineError(number, str(exc)))
            continue
        # Bounded at entry by intake's own limits, on the record exactly as intake will read it.
        if oversized := catalog_bounds(serde.decode(payload)):
            detail = "; ".join(str(r) for r in oversized)
            parsed.errors.append(LineError(number, f"{detail} (limits: processors/intake/policy.yaml)"))
            continue
        parsed.events.append((number, event, payload))
    return parsed


def parse_file(path: Path) -> ParsedFile:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    with path.open(encoding="utf-8", errors="strict") as fh:
        try:
            return parse_lines(fh)
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path} is not UTF-8: {exc}") from exc


def publish(
    settings: Settings,
    events: list[tuple[int, dict[str, Any], bytes]],
    producer: Producer | None = None,
    serde: TopicSerde | None = None,
) -> int:
    """Produce the events keyed by SKU (a product's events stay in order, and intake's
    de-duplication state is partitioned with them). Returns the number delivered.

    producer, serde: a long-lived caller's own (the HTTP gateway keeps one of each: a registry
    client per call would look the schema id up again for every request); else made for this call."""
    topic = TopicNames(settings.kafka.topic_prefix)(Topic.CATALOG_EVENTS)
    # Raises DeliveryFailed (a RuntimeError) naming the topic unless every event was acknowledged.
    if producer is None:  # not `producer or ...`: an idle Producer is falsy (len() is its queue)
        producer = make_producer(settings)
    # parse_lines' payload only proves the event fits the schema; the topic carries the
    # registry's Confluent framing, written here with the newest registered version.
    if serde is None:
        serde = Codec.of(settings).serde(Topic.CATALOG_EVENTS)
    return produce_and_confirm(
        producer,
        ((topic, event["product"]["sku"].encode(), serde.encode(event), None) for _, event, _ in events),
    )
