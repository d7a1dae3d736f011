"""The product-preservation search's CPU: single against double precision, one thread against two.

    python -m tests.bench.bench_preservation [--outputs 60] [--rounds 3]

Scores the pinned images of tests/unit/test_score_pins.py (six products, their templates and
spectra kept, as the quality stage keeps a product's region), ``--outputs`` searches a round, and
prints CPU and wall ms per search for each setting, and the ratios, in one process. Needs no
stack. The figures in docs/benchmarks.md ("Single-precision search, ...") came from here.
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from processors.imaging import preservation
from processors.imaging.checks import preservation_scores
from processors.imaging.preservation import ProductRegion, product_region
from tests.unit.test_score_pins import _cases

CASES = (
    "packshot_centred",
    "textured_jpeg_low",
    "packshot_small_offset",
    "textured_noisy",
    "packshot_jpeg",
    "textured_centred",
)


def _round(dtype: type[np.floating], threads: int, outputs: int) -> tuple[float, float]:
    """(CPU ms, wall ms) per search, the products' regions made and warmed first."""
    preservation._WORK_DTYPE = dtype
    cases = _cases()
    items = [cases[name] for name in CASES]
    regions: list[ProductRegion] = [product_region(product, mask) for _, product, mask in items]
    for (output, product, mask), region in zip(items, regions, strict=True):
        preservation_scores(output, product, mask, region)
    jobs = [(items[i % len(items)], regions[i % len(items)]) for i in range(outputs)]
    cpu, wall = time.process_time(), time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda job: preservation_scores(*job[0], job[1]), jobs))
    return (time.process_time() - cpu) * 1000 / outputs, (time.perf_counter() - wall) * 1000 / outputs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--outputs", type=int, default=60, help="searches per round (default 60)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds of every setting, interleaved (default 3)"
    )
    args = parser.parse_args()
    settings = {
        "float64, 1 thread": (np.float64, 1),
        "float32, 1 thread": (np.float32, 1),
        "float32, 2 threads": (np.float32, 2),
    }
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in settings}
    kept = preservation._WORK_DTYPE
    try:
        for _ in range(args.rounds):
            for name, (dtype, threads) in settings.items():
                results[name].append(_round(dtype, threads, args.outputs))
    finally:
        preservation._WORK_DTYPE = kept
    cpu = {name: statistics.median(c for c, _ in runs) for name, runs in results.items()}
    for name, runs in results.items():
        walls = statistics.median(w for _, w in runs)
        print(
            f"{name:<20} CPU {cpu[name]:5.1f} ms/search (median of {args.rounds}), "
            f"wall {walls:5.1f} ms/search"
        )
    print(f"float32 / float64 CPU, one thread: {cpu['float32, 1 thread'] / cpu['float64, 1 thread']:.2f}")
    print(
        f"two threads / one thread CPU, float32: {cpu['float32, 2 threads'] / cpu['float32, 1 thread']:.2f}"
    )


if __name__ == "__main__":
    main()
