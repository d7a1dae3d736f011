"""The generated images' PNG encode: Pillow's encoder against processors/imaging/png_writer.py.

    python -m tests.bench.bench_png [--rounds 20]

Encodes the pinned compositor outputs of tests/unit/test_score_pins.py (512 px and smaller
composites under tests/unit/data/composites/, upscaled to 512 px where smaller, the size the
pipeline bench generates) with each encoder, and prints CPU ms per image, the bytes and the
decode time of each file, and the ratio, in one process. Needs no stack. The figures in
docs/benchmarks.md ("One PNG filter, ...") came from here.
"""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from processors.imaging.png_writer import encode_png, pillow_png

COMPOSITES = Path(__file__).resolve().parents[1] / "unit" / "data" / "composites"
SIZE = 512


def _images() -> list[Image.Image]:
    images = []
    for path in sorted(COMPOSITES.glob("*.png")):
        with Image.open(path) as image:
            rgb = image.convert("RGB")
        if rgb.width != SIZE:
            rgb = rgb.resize((SIZE, SIZE * rgb.height // rgb.width), Image.Resampling.BICUBIC)
        images.append(rgb)
    if not images:
        raise SystemExit(f"no composites under {COMPOSITES}")
    return images


Encoder = Callable[[Image.Image], bytes]


def _measure(encode: Encoder, images: list[Image.Image], rounds: int) -> dict[str, float]:
    started = time.process_time()
    files = [encode(image) for _ in range(rounds) for image in images]
    encode_ms = (time.process_time() - started) * 1000 / len(files)
    started = time.process_time()
    for data in files:
        with Image.open(io.BytesIO(data)) as decoded:
            decoded.load()
    decode_ms = (time.process_time() - started) * 1000 / len(files)
    for image, data in zip(images, files, strict=False):
        with Image.open(io.BytesIO(data)) as decoded:
            assert np.array_equal(np.asarray(decoded), np.asarray(image)), "not lossless"
    return {"encode_ms": encode_ms, "decode_ms": decode_ms, "kb": np.mean([len(d) for d in files]) / 1000}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rounds", type=int, default=20, help="encodes of each image per encoder (default 20)"
    )
    args = parser.parse_args()
    images = _images()
    print(f"{len(images)} composites at {SIZE} px, {args.rounds} rounds each")
    results = {}
    for name, encode in (("pillow, zlib level 1", pillow_png), ("png_writer (Up, ISA-L 1)", encode_png)):
        _measure(encode, images, 1)  # warm: codecs loaded, caches filled
        results[name] = figures = _measure(encode, images, args.rounds)
        print(
            f"{name:26} encode {figures['encode_ms']:5.1f} ms  decode {figures['decode_ms']:4.1f} ms  "
            f"{figures['kb']:.0f} KB"
        )
    before, after = results.values()
    print(
        f"png_writer: {after['encode_ms'] / before['encode_ms']:.2f}x the encode CPU, "
        f"{after['kb'] / before['kb']:.2f}x the bytes, "
        f"{after['decode_ms'] / before['decode_ms']:.2f}x the decode CPU"
    )


if __name__ == "__main__":
    main()
