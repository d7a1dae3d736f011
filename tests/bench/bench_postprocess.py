"""Postprocess image work per channel preset, with signing on and off: images/s on one core.

    python -m tests.bench.bench_postprocess [--jobs 20] [--size 1024] [--channels web,marketplace]

Per job and preset, the work the stages do for one chosen image: the product mask from its
placement (processors.channels.product_mask), every derivative of the channel framed, encoded
with its XMP, decoded and checked against the channel's rules (processors.channels.render), and,
with signing on, each file signed with a C2PA manifest of the job's lineage (what publish adds,
processors.provenance.signing). No Kafka and no storage: this measures the image work alone,
in one thread. The chosen image is a compositor output (the product photo on a kitchen scene).

Prints, per channel, signing off and on: derivatives per CPU-second and per wall second, jobs
per CPU-second, and the signing cost per file. CPU time (this process's own) is the figure to
compare: wall time on a shared 2-core machine measures the neighbours too. Off and on runs are
interleaved, so both see the same conditions; the median of --repeats is printed.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from gpu_workers.backends.compositor.paste import composite_with_placement
from processors.channels.presets import load_presets
from processors.channels.product_mask import job_product_mask
from processors.channels.render import render_channel
from processors.imaging.derivatives import Metadata
from processors.imaging.masks import compute_mask
from processors.provenance.keys import init_test_chain, load_material
from processors.provenance.signing import ContentSigner
from processors.provenance.source_type import COMPOSITE_SYNTHETIC, uri


@dataclass(frozen=True)
class Result:
    channel: str
    signing: bool
    jobs: int
    derivatives: int
    seconds: float  # wall
    cpu_seconds: float  # this process's CPU time
    sign_cpu_seconds: float

    @property
    def per_cpu_second(self) -> float:
        return self.derivatives / self.cpu_seconds

    def line(self) -> str:
        signing = ""
        if self.signing:
            signing = f"{1000 * self.sign_cpu_seconds / self.derivatives:5.1f} CPU-ms/file signing"
        return (
            f"{self.channel:12s} signing {'on ' if self.signing else 'off'}  "
            f"{self.per_cpu_second:6.1f} derivatives/CPU-s  "
            f"{self.derivatives / self.seconds:6.1f} derivatives/s wall  "
            f"{self.jobs / self.cpu_seconds:6.1f} jobs/CPU-s  {signing}"
        )


def product_photo() -> Image.Image:
    image = Image.new("RGB", (800, 800), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    draw.rectangle((230, 200, 540, 640), fill=(30, 90, 170))
    draw.rectangle((260, 240, 510, 330), fill=(240, 200, 40))
    draw.ellipse((520, 300, 640, 500), outline=(30, 90, 170), width=28)
    return image


def job_for(channel: str, size: int) -> dict:
    return {
        "job_id": "bench-job",
        "event_id": "bench-event",
        "product": {"sku": "BENCH"},
        "spec": {"channel": channel, "template_id": "studio-hero", "template_version": "3", "width": size},
        "references": [{"role": "PRODUCT", "sha256": "0" * 64, "key": "refs/x"}],
        "route": {"params": {"scene": "kitchen"}},
        "generation": {
            "backend": "compositor",
            "model": "compositor",
            "model_version": "compositor-1.0.0",
            "seed": 7,
            "sampler": "",
            "steps": 0,
            "guidance": 0.0,
            "width": size,
            "height": size,
        },
        "quality": {"passed": True, "scores": {"preservation": 0.98}, "reasons": []},
        "review": {"decision": "APPROVE", "reviewer": "policy:auto", "decided_at": 0},
    }


def run(channel: str, jobs: int, size: int, signer: ContentSigner | None) -> Result:
    product = product_photo()
    mask = compute_mask(product)
    image, _ = composite_with_placement(product, mask, size, size, "kitchen", 7)
    presets = load_presets().for_channel(channel)
    job = job_for(channel, size)
    metadata = Metadata({"lightbox:job_id": job["job_id"]}, uri(COMPOSITE_SYNTHETIC))
    count, sign_seconds = 0, 0.0
    started, started_cpu = time.perf_counter(), time.process_time()
    for _ in range(jobs):
        placed = job_product_mask(job, image.size, lambda ref: (product, mask))
        for out in render_channel(image, presets, metadata, placed):
            count += 1
            if signer is not None:
                record = {
                    "name": out.spec.name,
                    "format": out.spec.format,
                    "width": out.spec.width,
                    "height": out.spec.height,
                    "sha256": hashlib.sha256(out.data).hexdigest(),
                }
                t = time.process_time()
                signer.sign_derivative(out.data, job, record)
                sign_seconds += time.process_time() - t
    wall, cpu = time.perf_counter() - started, time.process_time() - started_cpu
    return Result(channel, signer is not None, jobs, count, wall, cpu, sign_seconds)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=20, help="jobs per channel and mode (default 20)")
    parser.add_argument("--size", type=int, default=1024, help="the chosen image's side in px (default 1024)")
    parser.add_argument("--channels", default=",".join(load_presets().channels), help="comma-separated")
    parser.add_argument("--repeats", type=int, default=3, help="runs per mode; the median is printed")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as keys:
        signer = ContentSigner(load_material("", "", "ES256", init_test_chain(Path(keys)).directory))
        run("default", 2, args.size, signer)  # warm-up: profiles, codecs, the native signer
        print(f"{args.jobs} jobs per run, {args.size}x{args.size} compositor image, median of {args.repeats}")
        for channel in args.channels.split(","):
            runs: dict[bool, list[Result]] = {False: [], True: []}
            for _ in range(args.repeats):
                for active in (None, signer):
                    runs[active is not None].append(run(channel, args.jobs, args.size, active))
            medians = {}
            for signing, results in runs.items():
                medians[signing] = sorted(results, key=lambda r: r.cpu_seconds)[len(results) // 2]
                spread = statistics.pstdev(r.per_cpu_second for r in results)
                print(f"{medians[signing].line()}  (±{spread:.1f})")
            cost = medians[True].cpu_seconds / medians[False].cpu_seconds - 1
            print(f"{'':12s} signing adds {cost:+.1%} CPU time")


if __name__ == "__main__":
    main()
