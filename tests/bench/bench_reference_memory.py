"""Peak memory of the references stage: events of 20 camera-sized references each (6000x6000 px
JPEG packshots, about 5 MB on the wire and 144 MB decoded apiece) through the real stage, handled
concurrently as one batch is, against real MinIO and an image host on loopback.

    python -m tests.bench.bench_reference_memory [--events 4] [--refs 20] [--size 6000]

Needs the stack (`lightbox stack up`). Prints the process's resident set before the batch and
its peak during it (Linux VmHWM, reset just before the batch through /proc/self/clear_refs), so
the figure is the stage's own and not the image generation's: the images are drawn by a child
process, once per size (cached under ~/.lightbox/cache), and served by another. Every run gets
bytes of its own (a JPEG comment carries the run id), so no stored mask or URL-cache entry from
an earlier run answers for them. The script uses only what every version of the stage has
(ReferencesStage, StageContext, InputRecord), so the same file measures before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROLES = ("PRODUCT", "MOODBOARD", "INFLUENCER")


def _status(field: str) -> int:
    """A /proc/self/status field in bytes (VmRSS, VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def make_images(directory: Path, cache: Path, count: int, size: int, run_id: str) -> None:
    """In a child process: draw (or reuse) the base packshots, write this run's copies."""
    import io

    import numpy as np
    from PIL import Image, ImageDraw

    cache.mkdir(parents=True, exist_ok=True)
    directory.mkdir(parents=True, exist_ok=True)
    for n in range(count):
        base = cache / f"packshot-{size}-{n}.jpg"
        if not base.exists():
            rng = np.random.default_rng(n)
            image = Image.new("RGB", (size, size), (250, 250, 248))
            draw = ImageDraw.Draw(image)
            colour = tuple(int(c) for c in rng.integers(30, 200, 3))
            draw.rounded_rectangle(
                (size * 0.2, size * 0.15, size * 0.8, size * 0.85), radius=size // 20, fill=colour
            )  # type: ignore[arg-type]
            draw.rectangle((size * 0.2, size * 0.45, size * 0.8, size * 0.5), fill=(240, 236, 220))
            pixels = np.asarray(image, dtype=np.int16) + rng.normal(0, 5, (size, size, 1)).astype(np.int16)
            buffer = io.BytesIO()
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=85)
            base.write_bytes(buffer.getvalue())
        data = base.read_bytes()
        comment = f"lightbox bench run {run_id}".encode()
        # A COM segment right after SOI: same pixels, bytes (and so digest) of this run's own.
        marker = b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment
        (directory / f"ref-{n}.jpg").write_bytes(data[:2] + marker + data[2:])


def _job(base_url: str, refs: int, event: int, run_id: str) -> dict[str, Any]:
    from tests.fixtures.avro_samples import JOB_V1

    job = copy.deepcopy(JOB_V1)
    job["job_id"] = f"bench-mem-{run_id}-{event}"
    job["references"] = []
    # A query string of its own per event: every event downloads and proves every reference
    # (the URL cache does not answer); the bytes, hence the stored objects and the product's
    # mask, are shared, as they are when one product fans out into several jobs.
    job["source_references"] = [
        {
            "url": f"{base_url}/ref-{n}.jpg?event={event}",
            "role": ROLES[0] if n == 0 else ROLES[1 + n % 2],
            "required": n == 0,
        }
        for n in range(refs)
    ]
    return job


async def run(events: int, refs: int, size: int) -> None:
    from deploy.local.session import StaticServer
    from processors.config import load_settings
    from processors.runtime import InputRecord, StageContext
    from processors.stages.references import ReferencesStage
    from schemas.topics import Topic

    settings = load_settings()
    settings = settings.model_copy(
        update={"references": settings.references.model_copy(update={"allow_hosts": ["127.0.0.1"]})}
    )
    run_id = uuid.uuid4().hex[:8]
    directory = settings.home / "data" / "bench-reference-memory" / run_id
    cache = settings.cache_dir / "bench-reference-memory"
    started = time.perf_counter()
    subprocess.run(
        [
            *(sys.executable, "-m", "tests.bench.bench_reference_memory"),
            *("--make", str(directory), "--cache", str(cache)),
            *("--refs", str(refs), "--size", str(size), "--run-id", run_id),
        ],
        check=True,
    )
    wire = sum(p.stat().st_size for p in directory.glob("*.jpg"))
    print(
        f"{events} event(s) x {refs} references of {size}x{size} px "
        f"({wire / refs / 1e6:.1f} MB each on the wire, {size * size * 4 / 1e6:.0f} MB decoded), "
        f"images ready in {time.perf_counter() - started:.1f} s"
    )
    server = StaticServer(directory)
    stage = ReferencesStage(StageContext(settings, "references"))
    await stage.start()
    try:
        records = [
            InputRecord(Topic.JOBS_ACCEPTED, 0, n, None, _job(server.url, refs, n, run_id), b"", [], 0)
            for n in range(events)
        ]
        baseline = _status("VmRSS")
        reset = _reset_peak()
        started = time.perf_counter()
        outcomes = await asyncio.gather(*(stage.handle(record) for record in records))
        elapsed = time.perf_counter() - started
        peak = _status("VmHWM") if reset else None
    finally:
        await stage.stop()
        server.close()
        shutil.rmtree(directory, ignore_errors=True)
    stored = sum(len(o.outputs[0].value["references"]) for o in outcomes if o.outputs)
    failed = [e.detail for o in outcomes for e in o.events if e.state in ("failed", "dropped_reference")]
    print(
        f"stored {stored} of {events * refs} references in {elapsed:.1f} s; failures: {failed[:3] or 'none'}"
    )
    print(f"RSS before the batch: {baseline / 2**20:.0f} MiB")
    if peak is None:
        print("peak RSS: unavailable (/proc/self/clear_refs not writable)")
    else:
        print(f"peak RSS during the batch: {peak / 2**20:.0f} MiB (+{(peak - baseline) / 2**20:.0f} MiB)")
    budget = getattr(getattr(stage, "fetcher", None), "decode_budget", None)
    if budget is not None:
        held = f"most held at once {budget.peak / 2**20:.0f} MiB"
        print(f"decode budget: {budget.capacity / 2**20:.0f} MiB, {held}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--events", type=int, default=4, help="jobs handled at once, as one batch (default 4)"
    )
    parser.add_argument("--refs", type=int, default=20, help="references per job (default 20)")
    parser.add_argument("--size", type=int, default=6000, help="image side in pixels (default 6000)")
    parser.add_argument("--make", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--run-id", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make is not None:
        make_images(args.make, args.cache, args.refs, args.size, args.run_id)
        return
    asyncio.run(run(args.events, args.refs, args.size))


if __name__ == "__main__":
    main()
