"""Headline benchmark: naive per-request generation vs Lightbox's batched path, one process.

The same N requests (distinct prompts and seeds, same model, size, steps, sampler, guidance,
device) go through

  (a) naive:    a loop that calls the diffusers pipeline once per request and PNG-encodes
                each image before starting the next;
  (b) lightbox: ``group_compatible`` + ``DiffusersBackend.generate`` in batches of B (one pipeline
                call per batch, per-item seeded generators), with PNG encoding of a batch's
                results overlapped with the next batch's generation (the worker uploads
                concurrently the same way).

All requests are present at t=0 (a backlog, as after a burst); an item's latency is the time until
its PNG bytes exist. Printed per path: images/s, p50/p95 latency, peak memory
(``torch.cuda.max_memory_allocated`` on CUDA, else the process's peak RSS, reset per path where
Linux allows) and the ratio to (a). Every path is warmed up at its batch shape first, so one-off
costs (kernel selection, torch.compile) are not timed.

Compute ceiling (GPU): SD1.5 at 512x512 denoises a 4x64x64 latent. One UNet forward at batch 1 is
0.80 TFLOP (counted with torch.utils.flop_counter on the SD1.5 configs in tests/ml_support.py; ~0.86
is often quoted). Classifier-free guidance runs the UNet at batch 2: 1.61 TFLOP per step, x25 steps
= 40.2 TFLOP, plus 2.5 TFLOP for the VAE decode at 512x512 and 0.03 for the text encoder: ~42.7
TFLOP per image (~43). At a dense bf16 peak of ~989 TFLOP/s (H100 SXM; H200 has the same tensor
cores) the ceiling is ~23 images/s. The script does not hard-code the estimate: it counts the
loaded model's FLOPs for one CFG UNet step, one VAE decode and the text encoder at the run's size,
and reports achieved TFLOP/s = images/s x TFLOP/image against a peak you pass (--peak-tflops) or
that is detected from the device name (H100 SXM / H200 989, H100 PCIe 756, A100 312). Batch-1 SD1.5
leaves tensor cores underfed (small GEMMs, many short kernels per step); batching raises the
achieved share.

Examples::

    python tests/bench/bench_generate.py                       # tiny random model, CPU-friendly
    python tests/bench/bench_generate.py --full-size-sd15 --device cuda --dtype bf16 \\
        --size 512 --steps 25 --batch-sizes 1,2,4,8,16 --requests 64 --options channels_last=true
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere

import torch
from PIL import Image

from gpu_workers.backends.base import GenerationItem, GenerationParams
from gpu_workers.backends.diffusers_backend import (
    DiffusersBackend,
    resolve_device,
    scheduler_for,
)
from gpu_workers.batching import group_compatible
from gpu_workers.registry import ModelRegistry
from tests.support.ml_pipelines import build_tiny_sd_pipeline

PROMPTS = [
    "a red leather sneaker on a marble plinth, soft studio light",
    "a ceramic coffee mug on a wooden table, morning light",
    "a steel wristwatch on black velvet, dramatic rim light",
    "a linen armchair in a bright scandinavian living room",
    "a glass perfume bottle among white flowers, pastel background",
    "a canvas backpack on a mountain trail at golden hour",
    "a pair of wireless earbuds on a concrete surface, minimal",
    "a cotton t-shirt folded on a beige background, flat lay",
]
NEGATIVE = "blurry, low quality, watermark, text"
DTYPES = {
    "bf16": "bfloat16",
    "bfloat16": "bfloat16",
    "fp16": "float16",
    "float16": "float16",
    "fp32": "float32",
    "float32": "float32",
}
# Dense (no sparsity) bf16 tensor-core peaks, TFLOP/s.
PEAKS = [
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
    ("A10", 125.0),
]


@dataclass
class PathResult:
    label: str
    batch: int
    wall_s: float
    latencies_ms: list[float]
    peak_bytes: int

    @property
    def images_per_s(self) -> float:
        return len(self.latencies_ms) / self.wall_s

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# -- memory ----------------------------------------------------------------------------------


def reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return
    # Linux: writing 5 resets VmHWM (peak RSS) for this process.
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def peak_bytes(device: str) -> int:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated())
    with contextlib.suppress(OSError), open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def fmt_bytes(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


# -- the two paths ---------------------------------------------------------------------------


def encode_png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def run_naive(pipe: Any, items: list[GenerationItem], device: str) -> PathResult:
    p = items[0].params
    latencies: list[float] = []
    reset_peak(device)
    t0 = time.perf_counter()
    for item in items:
        image = pipe(
            prompt=item.params.prompt,
            negative_prompt=item.params.negative_prompt,
            width=p.width,
            height=p.height,
            num_inference_steps=p.steps,
            guidance_scale=p.guidance,
            generator=torch.Generator(device).manual_seed(item.params.seed),
        ).images[0]
        encode_png(image)
        latencies.append((time.perf_counter() - t0) * 1000.0)
    wall = time.perf_counter() - t0
    return PathResult("naive loop", 1, wall, latencies, peak_bytes(device))


async def run_batched(
    backend: DiffusersBackend, items: list[GenerationItem], batch: int, device: str
) -> PathResult:
    batches = group_compatible(items, backend.batch_key, max_batch=batch)
    latencies: list[float] = []

    def encode_all(results: list[Any]) -> None:
        for result in results:
            encode_png(result.image)
            latencies.append((time.perf_counter() - t0) * 1000.0)

    reset_peak(device)
    t0 = time.perf_counter()
    pending: list[asyncio.Future[None]] = []
    for group in batches:
        results = await backend.generate(group)
        # Encode (the worker: encode + upload) while the next batch runs on the device.
        pending.append(asyncio.ensure_future(asyncio.to_thread(encode_all, results)))
    await asyncio.gather(*pending)
    wall = time.perf_counter() - t0
    return PathResult("lightbox batched", batch, wall, latencies, peak_bytes(device))


# -- FLOP accounting -------------------------------------------------------------------------


def count_flops(fn: Callable[[], object]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def flops_per_image(pipe: Any, width: int, height: int, steps: int, guidance: float) -> float:
    """FLOPs for one image: steps x UNet (batch 2 under CFG) + VAE decode + text encoder."""
    unet = getattr(pipe.unet, "_orig_mod", pipe.unet)  # count through torch.compile
    cfg = 2 if guidance > 1.0 else 1
    scale = pipe.vae_scale_factor
    device, dtype = unet.device, unet.dtype
    latents = torch.randn(
        cfg, unet.config.in_channels, height // scale, width // scale, device=device, dtype=dtype
    )
    context = torch.randn(
        cfg, pipe.tokenizer.model_max_length, unet.config.cross_attention_dim, device=device, dtype=dtype
    )
    t = torch.tensor(500, device=device)
    unet_flops = count_flops(lambda: unet(latents, t, encoder_hidden_states=context))
    vae_in = torch.randn(
        1,
        pipe.vae.config.latent_channels,
        height // scale,
        width // scale,
        device=device,
        dtype=pipe.vae.dtype,
    )
    vae_flops = count_flops(lambda: pipe.vae.decode(vae_in))
    ids = torch.zeros(cfg, pipe.tokenizer.model_max_length, dtype=torch.long, device=device)
    text_flops = count_flops(lambda: pipe.text_encoder(ids))
    return float(steps * unet_flops + vae_flops + text_flops)


def detect_peak_tflops(device: str) -> tuple[float | None, str]:
    if not device.startswith("cuda"):
        return None, "cpu"
    name = torch.cuda.get_device_name()
    for key, peak in PEAKS:
        if key in name:
            return peak, name
    return None, name


# -- main ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-path", type=Path, help="a local diffusers text-to-image pipeline")
    ap.add_argument(
        "--full-size-sd15",
        action="store_true",
        help="build a random-weight SD1.5-architecture pipeline (no download)",
    )
    ap.add_argument("--size", type=int, help="width = height (default 512; 64 for the tiny model)")
    ap.add_argument("--steps", type=int, help="default 25; 4 for the tiny model")
    ap.add_argument("--batch-sizes", default="1,2,4,8,16")
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    ap.add_argument("--dtype", default="bf16", help="bf16|fp16|fp32 (CPU always runs fp32)")
    ap.add_argument("--sampler", default="euler")
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--options", default="", help="ModelSpec options, e.g. channels_last=true")
    ap.add_argument("--repeats", type=int, default=1, help="rounds per path; the median is shown")
    ap.add_argument("--peak-tflops", type=float, help="device's dense bf16 peak (else detected)")
    return ap.parse_args(argv)


def prepare_model(args: argparse.Namespace, workdir: Path, dtype: str) -> tuple[Path, str]:
    if args.model_path:
        return args.model_path, f"local:{args.model_path}"
    if args.full_size_sd15:
        started = time.perf_counter()
        path = build_tiny_sd_pipeline(workdir / "sd15-random", full_size=True, save_dtype=dtype)
        print(f"built random-weight SD1.5 pipeline in {time.perf_counter() - started:.0f}s")
        return path, "sd15-architecture (random weights)"
    return build_tiny_sd_pipeline(workdir / "tiny"), "tiny random SD (unet 32/64)"


def make_items(n: int, model: str, size: int, steps: int, guidance: float, sampler: str) -> list:
    return [
        GenerationItem(
            request_id=f"bench-{i}#0",
            params=GenerationParams(
                model=model,
                width=size,
                height=size,
                steps=steps,
                guidance=guidance,
                sampler=sampler,
                seed=1000 + i,
                prompt=PROMPTS[i % len(PROMPTS)],
                negative_prompt=NEGATIVE,
            ),
        )
        for i in range(n)
    ]


async def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    tiny = not (args.model_path or args.full_size_sd15)
    size = args.size or (64 if tiny else 512)
    steps = args.steps or (4 if tiny else 25)
    device = resolve_device(args.device)
    dtype = "float32" if device == "cpu" else DTYPES[args.dtype.lower()]
    batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    options = dict(kv.split("=", 1) for kv in args.options.split(",") if "=" in kv)

    with tempfile.TemporaryDirectory(prefix="lightbox-bench-") as tmp:
        path, label = prepare_model(args, Path(tmp), dtype)
        registry = ModelRegistry.from_dict(
            {
                "models": {
                    "bench": {
                        "backend": "diffusers",
                        "path": str(path),
                        "kind": "text-to-image",
                        "dtype": dtype,
                        "scheduler": args.sampler,
                        "steps": steps,
                        "guidance": args.guidance,
                        "width": size,
                        "height": size,
                        "pool": "gpu",
                        "options": options,
                    }
                }
            }
        )
        registry.validate()
        backend = DiffusersBackend(registry, device=device)
        loaded = await backend.load("bench")
        # Both paths run the same loaded pipeline (same weights, options, device, scheduler).
        pipe = loaded.pipe
        pipe.scheduler = scheduler_for(loaded, args.sampler)
        items = make_items(args.requests, "bench", size, steps, args.guidance, args.sampler)

        print(
            f"model={label} version={loaded.version} device={device} dtype={dtype} "
            f"threads={torch.get_num_threads()} size={size} steps={steps} "
            f"sampler={args.sampler} guidance={args.guidance} requests={args.requests} "
            f"repeats={args.repeats} "
            f"options={options or '-'}"
        )

        # Warm-up at every shape that will be timed.
        run_naive(pipe, items[:2], device)
        for b in batch_sizes:
            await backend.generate(items[: min(b, len(items))])
        # Rounds interleave the paths so drift (clocks, neighbours on a shared machine) hits
        # all of them alike; each path reports its median round.
        rounds: dict[tuple[str, int], list[PathResult]] = {}
        for _ in range(args.repeats):
            runs = [run_naive(pipe, items, device)]
            for b in batch_sizes:
                runs.append(await run_batched(backend, items, b, device))
            for r in runs:
                rounds.setdefault((r.label, r.batch), []).append(r)
        results = [median_run(rs) for rs in rounds.values()]
        naive = results[0]

        report(results, naive)
        await report_compute(args, pipe, device, size, steps, results)
        backend.close()


def median_run(runs: list[PathResult]) -> PathResult:
    return sorted(runs, key=lambda r: r.wall_s)[len(runs) // 2]


def report(results: list[PathResult], naive: PathResult) -> None:
    print(f"{'path':<18}{'B':>4}{'images/s':>11}{'p50 ms':>10}{'p95 ms':>10}{'peak mem':>12}{'vs naive':>10}")
    for r in results:
        ratio = r.images_per_s / naive.images_per_s
        print(
            f"{r.label:<18}{r.batch:>4}{r.images_per_s:>11.2f}{r.pct(0.5):>10.0f}"
            f"{r.pct(0.95):>10.0f}{fmt_bytes(r.peak_bytes):>12}{ratio:>9.2f}x"
        )
    best = max(results[1:], key=lambda r: r.images_per_s, default=None)
    if best is not None:
        print(
            f"best: lightbox B={best.batch}: {best.images_per_s:.2f} images/s = "
            f"{best.images_per_s / naive.images_per_s:.2f}x naive "
            f"({naive.images_per_s:.2f} images/s)"
        )


async def report_compute(
    args: argparse.Namespace,
    pipe: Any,
    device: str,
    size: int,
    steps: int,
    results: list[PathResult],
) -> None:
    flops = flops_per_image(pipe, size, size, steps, args.guidance)
    peak, name = detect_peak_tflops(device)
    peak = args.peak_tflops or peak
    line = f"compute: {flops / 1e12:.4f} TFLOP/image (counted: {steps} CFG UNet steps + VAE + text)"
    print(line)
    for r in results:
        achieved = r.images_per_s * flops / 1e12
        share = f" = {100 * achieved / peak:.1f}% of {peak:.0f} TFLOP/s ({name})" if peak else ""
        print(f"  {r.label:<18} B={r.batch:<3} {achieved:8.3f} TFLOP/s{share}")
    if not peak:
        print("  (no peak known for this device; pass --peak-tflops for a ceiling share)")


if __name__ == "__main__":
    asyncio.run(main())
