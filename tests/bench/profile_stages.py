"""Where the stages' CPU goes: the bench's baseline (the stages' handlers in flow order, one job
at a time, real MinIO, no Kafka) under pyinstrument, with the handlers' worker threads run inline
so their work shows in the one profile.

    python -m tests.bench.profile_stages [--products 6] [--locales 2] [--out profile.txt]

Needs the stack (`lightbox stack up`). Prints the per-stage CPU of the run and pyinstrument's
call tree (the figures in docs/benchmarks.md, "Profiles").
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deploy.local.session import StaticServer
from gateway.harness.baseline import run_baseline
from gateway.harness.bench import LOCALES, _baseline_settings
from gateway.harness.sample_catalog import catalog_events, make_sample_products
from processors.config import load_settings


async def _inline(func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    return func(*args, **kwargs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=6, help="sample products (default 6, all of them)")
    parser.add_argument("--locales", type=int, default=2, help="jobs per product (default 2)")
    parser.add_argument("--out", type=Path, help="also write the call tree here")
    args = parser.parse_args()
    from pyinstrument import Profiler

    settings = load_settings()
    run_id = f"profile-{time.strftime('%Y%m%d-%H%M%S')}"
    directory = settings.home / "bench" / run_id
    samples = make_sample_products(directory)[: args.products]
    server = StaticServer(directory)
    events = []
    for i, product in enumerate(samples):
        events += catalog_events([product], server.url, locales=LOCALES[: args.locales], salt=f"{run_id}-{i}")
        events[-1]["product"]["sku"] = f"{product.sku}-{run_id}-{i}"
    # The handlers' blocking work runs in threads the profiler would not see: run it inline.
    asyncio.to_thread = _inline  # type: ignore[assignment]
    profiler = Profiler(interval=0.002)
    try:
        profiler.start()
        result = asyncio.run(run_baseline(_baseline_settings(settings, run_id), events))
        profiler.stop()
    finally:
        server.close()
    print(f"{result.jobs} jobs, {result.published} published in {result.elapsed_s:.2f} s")
    for stage, cpu in result.cpu_s.items():
        print(f"  {stage:<12} {cpu / max(1, result.jobs):.3f} CPU s/job")
    text = profiler.output_text(unicode=False, color=False)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
