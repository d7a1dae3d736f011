"""Restore time and memory of intake's de-duplication table, with the real SeenTable and broker.

    python -m tests.bench.bench_seen_restore [--entries 2000000] [--partitions 3] [--keep]

Produces a changelog of N entries (half `event:` entries, half `slot:` entries, as an accepted
event with one job writes them, all live) to a fresh compacted topic on the local broker, then
restores it in a child process with SeenTable exactly as intake does on an assignment of every
partition, and prints seconds, records/s, and peak RSS (resource.getrusage of the child, which
does nothing but import and restore) beside its RSS before the restore. --tracemalloc also
reports the Python heap's peak (slower). The topic is deleted afterwards unless --keep.
Needs the stack (`lightbox stack up`).
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import subprocess
import sys
import time
import uuid

from confluent_kafka.admin import AdminClient, NewTopic

from deploy.local.stack import LocalStack, topic_configs
from processors.config import Settings, load_settings
from processors.kafka_clients import make_producer
from processors.runtime.codec import Codec
from processors.state.entry import SeenEntry
from processors.state.seen_table import SeenTable
from schemas.topics import Topic, TopicNames


def _settings(prefix: str) -> Settings:
    base = load_settings()
    return base.model_copy(update={"kafka": base.kafka.model_copy(update={"topic_prefix": prefix})})


def _create(settings: Settings, partitions: int) -> str:
    name = TopicNames(settings.kafka.topic_prefix)(Topic.INTAKE_SEEN)
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap})
    topic = NewTopic(
        name, num_partitions=partitions, replication_factor=1, config=topic_configs(Topic.INTAKE_SEEN)
    )
    admin.create_topics([topic])[name].result(30)
    time.sleep(2)  # leaders
    return name


def _produce(settings: Settings, name: str, entries: int, partitions: int) -> float:
    # As the stage's outbox writes entries, and the table reads them.
    serde = Codec.of(settings).serde(Topic.INTAKE_SEEN)
    producer = make_producer(settings, **{"linger.ms": 50, "batch.size": 1_000_000})
    now = int(time.time() * 1000)
    started = time.perf_counter()
    for i in range(entries):
        event_id = str(uuid.UUID(int=i))
        job_id = str(uuid.uuid5(uuid.NAMESPACE_OID, event_id))
        if i % 2 == 0:
            key = f"event:{event_id}"
            entry = SeenEntry(0, (job_id,), event_id, now, now, 0, i, b"\xee" * 32, now)
        else:
            key = f"slot:BENCH-{i}|hero|512x512|web|en-US|studio-hero|1.1.0"
            entry = SeenEntry(0, (job_id,), event_id, now, now, 0, i, b"\xcc" * 32, now, now, None)
        value = serde.encode(entry.to_record(key))
        while True:
            try:
                producer.produce(name, key=key.encode(), value=value, partition=i % partitions)
                break
            except BufferError:
                producer.poll(0.05)
        if i % 10_000 == 0:
            producer.poll(0)
            if i and i % 500_000 == 0:
                print(f"  produced {i:,}", flush=True)
    left = producer.flush(120)
    if left:
        raise SystemExit(f"{left} entries not delivered")
    return time.perf_counter() - started


def _restore(prefix: str, partitions: int, trace: bool) -> dict[str, float]:
    """In this (child) process: restore every partition and measure."""
    if trace:
        import tracemalloc

        tracemalloc.start()
    settings = _settings(prefix)
    table = SeenTable(settings, TopicNames(prefix)(Topic.INTAKE_SEEN))
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    table.on_assign(list(range(partitions)))
    started = time.perf_counter()
    report = table.restore_if_needed()
    seconds = time.perf_counter() - started
    assert report is not None
    result = {
        "entries": float(len(table)),
        "records_read": float(report.read),
        "seconds": seconds,
        "records_per_s": report.read / seconds,
        "deadline_s": report.deadline_s,
        "rss_before_mb": rss_before,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if trace:
        import tracemalloc

        result["tracemalloc_peak_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--entries", type=int, default=2_000_000)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the topic (to restore it again)")
    parser.add_argument("--tracemalloc", action="store_true")
    parser.add_argument("--restore-only", metavar="PREFIX", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.restore_only:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="  %(message)s")
        print(json.dumps(_restore(args.restore_only, args.partitions, args.tracemalloc)))
        return

    prefix = f"bench-seen-{uuid.uuid4().hex[:6]}."
    settings = _settings(prefix)
    name = _create(settings, args.partitions)
    # The changelog is registry-framed: the prefix's subjects must exist before it is written.
    LocalStack(settings, progress=lambda _: None).ensure_schemas()
    print(f"producing {args.entries:,} entries to {name} ({args.partitions} partitions)", flush=True)
    produce_s = _produce(settings, name, args.entries, args.partitions)
    print(f"produced in {produce_s:.1f} s; restoring in a fresh process", flush=True)
    try:
        child = [sys.executable, "-m", "tests.bench.bench_seen_restore", "--restore-only", prefix]
        child += ["--partitions", str(args.partitions)] + (["--tracemalloc"] if args.tracemalloc else [])
        # Its progress lines (records/s, % of the end offsets) come through on stderr.
        done = subprocess.run(child, stdout=subprocess.PIPE, text=True, check=True)
        figures = json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        if not args.keep:
            AdminClient({"bootstrap.servers": settings.kafka.bootstrap}).delete_topics([name])
    print(
        f"restore: {int(figures['records_read']):,} records -> {int(figures['entries']):,} entries in "
        f"{figures['seconds']:.1f} s = {figures['records_per_s']:,.0f} records/s "
        f"(deadline {figures['deadline_s']:.0f} s)"
    )
    table_mb = figures["peak_rss_mb"] - figures["rss_before_mb"]
    per_entry = table_mb * 2**20 / max(1, figures["entries"])
    print(
        f"memory: peak RSS {figures['peak_rss_mb']:,.0f} MiB (before the restore "
        f"{figures['rss_before_mb']:,.0f} MiB: {table_mb:,.0f} MiB for the table, "
        f"{per_entry:,.0f} bytes an entry)"
    )
    if "tracemalloc_peak_mb" in figures:
        print(f"python heap peak (tracemalloc): {figures['tracemalloc_peak_mb']:,.0f} MiB")


if __name__ == "__main__":
    main()
