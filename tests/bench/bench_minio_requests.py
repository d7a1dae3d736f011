"""What a job costs the stack's MinIO: its CPU per request, and the requests a job makes.

    lightbox stack up && python -m tests.bench.bench_minio_requests [--requests 300] [--jobs 24]

1. PUT, GET and HEAD `--requests` times each for random objects of 30 B, 64 KB and 340 KB (the
   size of a generated 512 px PNG), and prints MinIO's CPU per request (from its own /proc
   accounting, through the pid file `stack up` writes) and the wall time the client saw.
2. Runs `--jobs` jobs through the bench's baseline (the stages' handlers in one process) with
   the MinIO client's requests counted, and prints the requests per job by method and by the
   first segment of the key, with MinIO's CPU per job meanwhile.

The figures in docs/benchmarks.md ("A quiet MinIO, a tidy broker, a warmed bench") came from here.
"""

from __future__ import annotations

import argparse
import collections
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import minio.api

from gateway.harness import bench
from processors.config import Settings, load_settings
from processors.storage import ObjectStore

SIZES = (("30 B", 30), ("64 KB", 65_536), ("340 KB", 340_000))


def _minio_cpu_s(settings: Settings) -> float:
    pid = int((settings.data_dir / "run" / "minio.pid").read_text().split()[0])
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def per_request(settings: Settings, requests: int) -> None:
    store = ObjectStore(settings.storage)
    root = f"bench-test/minio-requests-{time.time_ns()}"
    for label, size in SIZES:
        data = os.urandom(size)
        keys = [f"{root}/{size}/{i}" for i in range(requests)]
        figures = []
        try:
            for method, call in (
                ("PUT", lambda key, data=data: store.put_bytes(key, data, "application/octet-stream")),
                ("GET", store.get_bytes),
                ("HEAD", store.exists),
            ):
                cpu, wall = _minio_cpu_s(settings), time.perf_counter()
                for key in keys:
                    call(key)
                used = (_minio_cpu_s(settings) - cpu) / requests * 1000
                took = (time.perf_counter() - wall) / requests * 1000
                figures.append(f"{method} {used:.2f} ms CPU ({took:.2f} ms wall)")
            print(f"{label:>7}: " + ", ".join(figures))
        finally:
            for key in keys:
                store.delete(key)


def per_job(settings: Settings, jobs: int) -> None:
    counts: collections.Counter[tuple[str, str]] = collections.Counter()
    original = minio.api.Minio._url_open

    def counted(self: minio.api.Minio, method: str, region: str, *args: Any, **kwargs: Any) -> Any:
        key = kwargs.get("object_name") or (args[1] if len(args) > 1 else None) or ""
        counts[(method, str(key).split("/")[0])] += 1
        return original(self, method, region, *args, **kwargs)

    minio.api.Minio._url_open = counted  # type: ignore[method-assign]
    try:
        with tempfile.TemporaryDirectory() as directory:
            result, services = bench._run_baseline(
                settings, f"minio-requests-{int(time.time())}", Path(directory), jobs, 0
            )
    finally:
        minio.api.Minio._url_open = original  # type: ignore[method-assign]
    total = sum(counts.values())
    print(f"{result.published} of {result.jobs} jobs published; {total / jobs:.1f} requests a job")
    for (method, segment), n in counts.most_common():
        print(f"  {n / jobs:5.2f} a job  {method:4s} {segment or '(bucket)'}")
    if "minio" in services:
        print(f"MinIO's CPU meanwhile: {services['minio'] / jobs:.4f} s a job")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--requests", type=int, default=300, help="requests of each kind and size (default 300)"
    )
    parser.add_argument(
        "--jobs", type=int, default=24, help="baseline jobs to count requests over (default 24)"
    )
    args = parser.parse_args()
    settings = load_settings()
    per_request(settings, args.requests)
    per_job(settings, args.jobs)


if __name__ == "__main__":
    main()
