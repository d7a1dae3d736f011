"""Dead-letter replay throughput, letters/s: `dlq replay` of a range (produce the originals with
their replay headers and a `dlq_replayed` event each, write the ledger), then the same range again
(every letter found in the ledger, nothing sent), then a dry run.

    .venv/bin/lightbox stack up && .venv/bin/python -m tests.bench.bench_dlq_replay [--letters 5000]

Under a throwaway topic prefix: its topics and schemas are made as `stack up` makes them, the
letters are written as the runtime writes them (the outbox: a small valid catalog event each,
dead-lettered by intake), no stage runs, so what is timed is the tool alone: reading pipeline.dlq,
the ledger in MinIO, and producing with the broker's acknowledgement.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import tempfile
import time
import uuid
from pathlib import Path

from deploy.local.stack import LocalStack
from gateway.harness.sample_catalog import catalog_events, make_sample_products
from gateway.ops import dlq
from gateway.ops.submit import parse_lines
from processors.config import Settings, load_settings
from processors.kafka_clients import make_producer, produce_and_confirm
from processors.metrics import StageMetrics
from processors.runtime.codec import Codec
from processors.runtime.dlq import DeadLetter, Source
from processors.runtime.errors import TransientError
from processors.runtime.outbox import Outbox
from processors.runtime.sizes import MessageLimits
from schemas.topics import Topic, TopicNames


def write_letters(settings: Settings, count: int, directory: str) -> None:
    products = make_sample_products(Path(directory))
    (event,) = catalog_events(products[:1], "http://127.0.0.1:9", salt="bench")
    ((_, event, _),) = parse_lines([json.dumps(event)]).events
    codec = Codec.of(settings)
    topic = TopicNames(settings.kafka.topic_prefix)(Topic.CATALOG_EVENTS)
    value = codec.serde(Topic.CATALOG_EVENTS).encode(event)
    outbox = Outbox(
        "intake", (), codec, StageMetrics("intake"), logging.getLogger("bench"), MessageLimits(1_000_000)
    )
    at = int(time.time() * 1000)
    messages = []
    for i in range(count):
        letter = DeadLetter.of(
            Source(topic, 0, i, b"bench-sku", value), "intake", TransientError("down"), 3, at, at, "unknown"
        )
        # The letter only (not its dead_lettered event): partition 0, so one range covers them all.
        (message,) = [
            m for m in outbox.dead_letter(letter, None).messages if m.topic.endswith("pipeline.dlq")
        ]
        messages.append(dataclasses.replace(message, partition=0))
    produce_and_confirm(make_producer(settings), messages, timeout_s=120)


def timed(settings: Settings, **options: object) -> tuple[float, dlq.ReplayReport]:
    started = time.perf_counter()
    report = dlq.replay(settings, partition=0, **options)  # type: ignore[arg-type]
    return time.perf_counter() - started, report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--letters", type=int, default=5000)
    args = parser.parse_args()
    base = load_settings()
    prefix = f"bench-dlq-{uuid.uuid4().hex[:6]}."
    settings = base.model_copy(update={"kafka": base.kafka.model_copy(update={"topic_prefix": prefix})})
    stack = LocalStack(settings, progress=lambda _: None)
    stack.ensure_topics(prefix)
    stack.ensure_schemas(prefix)
    with tempfile.TemporaryDirectory() as directory:
        write_letters(settings, args.letters, directory)
    print(f"{args.letters} dead letters under prefix {prefix} (chunk {settings.dlq.replay_chunk})")
    for label, options in (
        ("replay", {}),
        ("replay again (all in the ledger)", {}),
        ("dry run", {"dry_run": True}),
    ):
        seconds, report = timed(settings, **options)
        touched = report.count + len(report.already)
        print(
            f"{label:<34} {touched:>6} letters in {seconds:6.2f} s = {touched / seconds:8.0f} letters/s "
            f"(sent {0 if report.dry_run else report.count}, already replayed {len(report.already)})"
        )


if __name__ == "__main__":
    main()
