"""Generate throughput against the number of workers: 1, 2, 4 and 8 generate processes on this
machine, CPU compositor backend, reading generation.requests as a share group (default) or as a
consumer group.

    python -m tests.bench.bench_generate_scaling [--workers 1,2,4,8] [--jobs 96] [--size 512]
        [--mode share|group]

Per worker count: a fresh topic prefix (3 partitions, the default), N `lightbox run generate`
processes under the supervisor (generation.consumption as --mode says), waited for until each
logged that it started; then J requests (compositor route, one stored product reference, size x
size) are produced, one record per producer batch so a share group can spread them record by
record (the broker hands a share member whole produced batches), and the clock runs until J
results are on generation.results (read_committed). Printed per N: jobs/s, the speed-up over one
worker and the efficiency (speed-up / N). In group mode at most 3 workers (the partitions) get
any work. Needs the stack (`lightbox stack up`).
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, Producer

from deploy.local.stack import LocalStack
from deploy.local.supervisor import Supervisor
from processors.config import Settings, load_settings
from processors.runtime.codec import Codec
from processors.storage import ObjectStore
from schemas.topics import Topic, TopicNames
from tests.integration.test_generate_poison import _job

READY_TIMEOUT_S = 180.0
TICKS = os.sysconf("SC_CLK_TCK")
RUN_TIMEOUT_S = 900.0


def _started(log_file: Path) -> bool:
    return log_file.is_file() and '"stage started"' in log_file.read_text(errors="replace")


def _cpu_seconds(supervisor: Supervisor) -> float:
    """User + system CPU the workers used so far (Linux /proc), dead ones left out."""
    total = 0.0
    for child in supervisor.children:
        if child.process is None:
            continue
        try:
            fields = Path(f"/proc/{child.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime
    return total


def run_once(base: Settings, workers: int, jobs: int, size: int, mode: str) -> tuple[float, float]:
    """Jobs per second, and the workers' CPU-seconds per second (cores busy) meanwhile."""
    prefix = f"scale-{uuid.uuid4().hex[:6]}."
    settings = base.model_copy(update={"kafka": base.kafka.model_copy(update={"topic_prefix": prefix})})
    stack = LocalStack(settings, progress=lambda _: None)
    stack.ensure_topics()
    stack.ensure_schemas()
    names, codec = TopicNames(prefix), Codec.of(settings)
    store = ObjectStore(settings.storage)
    requests = []
    for _ in range(jobs):
        job = _job(store, "20")
        job["spec"].update(width=size, height=size)
        requests.append(job)
    log_dir = settings.log_dir / "bench-scaling" / prefix.rstrip(".")
    supervisor = Supervisor(
        ["generate"],
        log_dir,
        env={
            "LIGHTBOX_KAFKA__TOPIC_PREFIX": prefix,
            "LIGHTBOX_HOME": str(settings.home),
            "LIGHTBOX_GENERATION__CONSUMPTION": mode,
        },
        copies=workers,
    )
    supervisor.start()
    reader = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap,
            "group.id": f"bench-scaling-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not all(_started(c.log_file) for c in supervisor.children):
            if time.monotonic() > deadline:
                raise TimeoutError(f"not every worker started in {READY_TIMEOUT_S:.0f}s; logs in {log_dir}")
            supervisor.check()
            time.sleep(0.2)
        time.sleep(3.0)  # group joins after the start line
        reader.subscribe([names(Topic.GENERATION_RESULTS)])
        producer = Producer(
            {"bootstrap.servers": settings.kafka.bootstrap, "batch.num.messages": 1, "linger.ms": 0}
        )
        cpu_before = _cpu_seconds(supervisor)
        started = time.monotonic()
        for job in requests:
            producer.produce(
                names(Topic.GENERATION_REQUESTS),
                key=job["job_id"].encode(),
                value=codec.serde(Topic.GENERATION_REQUESTS).encode(job),
            )
        producer.flush(30)
        done: set[str] = set()
        serde = codec.serde(Topic.GENERATION_RESULTS)
        while len(done) < jobs:
            if time.monotonic() - started > RUN_TIMEOUT_S:
                raise TimeoutError(
                    f"{len(done)} of {jobs} results after {RUN_TIMEOUT_S:.0f}s; logs in {log_dir}"
                )
            for message in reader.consume(500, 0.2):
                if message.error() is None:
                    done.add(serde.decode(message.value())["job_id"])
        elapsed = time.monotonic() - started
        return jobs / elapsed, (_cpu_seconds(supervisor) - cpu_before) / elapsed
    finally:
        reader.close()
        supervisor.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", default="1,2,4,8")
    parser.add_argument("--jobs", type=int, default=96)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--mode", choices=["share", "group"], default="share")
    args = parser.parse_args(argv)
    settings = load_settings()
    counts = [int(n) for n in args.workers.split(",")]
    print(
        f"generate scaling: {args.jobs} jobs of {args.size}x{args.size}, compositor, {args.mode} mode, "
        f"{settings.kafka.partitions} partitions, {os.cpu_count()} CPUs, kafka {settings.kafka.version}"
    )
    print(f"  load average before: {os.getloadavg()[0]:.2f}")
    rates: dict[int, float] = {}
    for workers in counts:
        rates[workers], cores = run_once(settings, workers, args.jobs, args.size, args.mode)
        speedup = rates[workers] / rates[counts[0]]
        print(
            f"  {workers} worker(s): {rates[workers]:6.2f} jobs/s, x{speedup:.2f} of {counts[0]}, "
            f"efficiency {speedup * counts[0] / workers:.0%}; workers busy {cores:.2f} cores, "
            f"{cores / rates[workers] * 1000:.0f} CPU-ms/job; load {os.getloadavg()[0]:.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
