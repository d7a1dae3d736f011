"""Serde throughput, messages/s per topic's schema: Avro single-object encoding (schemas/serde.py)
against Confluent framing through the registry (schemas/confluent_serde.py), same records, same
process.

    python -m tests.bench.bench_serde [--messages 20000] [--rounds 3]

Needs the registry (`lightbox stack up`). Registers the schemas under a throwaway topic prefix,
warms each serde up (its registry lookups happen then, once), times encode and decode of the
schema's newest sample record, and deletes the subjects afterwards. Each figure is the best of
the rounds, the two serdes alternating, so a noisy neighbour on the machine costs both alike.
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from processors.config import Settings, load_settings
from schemas.compat import register, unregister
from schemas.confluent_serde import ConfluentSerdes
from schemas.serde import AvroSerde
from schemas.topics import SCHEMA_OF, Topic
from tests.fixtures.avro_samples import SAMPLES


@dataclass
class Row:
    schema: str
    topic: Topic
    size_single: int
    size_confluent: int
    enc_single: float = 0.0
    dec_single: float = 0.0
    enc_confluent: float = 0.0
    dec_confluent: float = 0.0


def rate(action: Callable[[], object], n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        action()
    return n / (time.perf_counter() - started)


def sample(name: str) -> dict[str, Any]:
    return SAMPLES[(name, max(v for n, v in SAMPLES if n == name))]


def bench(settings: Settings, messages: int, rounds: int) -> list[Row]:
    serdes = ConfluentSerdes(settings.registry, settings.kafka.topic_prefix)
    rows = []
    for name in sorted(set(SCHEMA_OF.values())):
        topic = next(t for t in Topic if SCHEMA_OF[t] == name)  # the job topics share one schema
        record = sample(name)
        single, confluent = AvroSerde(name), serdes(topic)
        single_bytes, confluent_bytes = single.encode(record), confluent.encode(record)
        confluent.decode(confluent_bytes)  # warm-up: the writer schema by id
        row = Row(name, topic, len(single_bytes), len(confluent_bytes))
        for _ in range(rounds):
            row.enc_single = max(row.enc_single, rate(lambda s=single, r=record: s.encode(r), messages))
            row.enc_confluent = max(
                row.enc_confluent, rate(lambda s=confluent, r=record: s.encode(r), messages)
            )
            row.dec_single = max(row.dec_single, rate(lambda s=single, b=single_bytes: s.decode(b), messages))
            row.dec_confluent = max(
                row.dec_confluent, rate(lambda s=confluent, b=confluent_bytes: s.decode(b), messages)
            )
        rows.append(row)
    return rows


def table(rows: list[Row]) -> str:
    head = (
        "| schema (topic) | bytes single-object / Confluent | encode msg/s single-object | "
        "encode msg/s Confluent | decode msg/s single-object | decode msg/s Confluent |"
    )
    lines = [head, "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(
            f"| {r.schema} ({r.topic.value}) | {r.size_single} / {r.size_confluent} | "
            f"{r.enc_single:,.0f} | {r.enc_confluent:,.0f} ({r.enc_confluent / r.enc_single:.2f}x) | "
            f"{r.dec_single:,.0f} | {r.dec_confluent:,.0f} ({r.dec_confluent / r.dec_single:.2f}x) |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=20000, help="per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="best of this many")
    args = parser.parse_args()
    base = load_settings()
    prefix = f"bench-{uuid.uuid4().hex[:8]}."
    settings = base.model_copy(update={"kafka": base.kafka.model_copy(update={"topic_prefix": prefix})})
    register(settings)
    try:
        rows = bench(settings, args.messages, args.rounds)
    finally:
        unregister(settings)
    print(f"{args.messages} messages per measurement, best of {args.rounds}; {settings.registry.url}")
    print(table(rows))


if __name__ == "__main__":
    main()
