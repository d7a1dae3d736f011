"""Pinned scores on fixed images: the quality checks and the compositor must measure the same
after any speed-up as before it.

Written on the code before the issue-14 speed-ups and run unchanged after them. The images are
drawn here, from fixed seeds and without fonts, so the pins depend on nothing but this file and
the code under test. Scores are pinned to 1e-3 (a faster search may sum in another order) and
every verdict exactly; the compositor's pixels are pinned (sha256 of the RGB bytes, and the pinned
composites themselves under data/composites/, which the CPU's float32 kernels may miss by one
level on a few values).
"""

from __future__ import annotations

import functools
import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from gpu_workers.backends.compositor import composite_with_placement
from processors.imaging.checks import (
    QualityThresholds,
    check_output,
    failed_reasons,
    find_product,
    preservation_scores,
)
from processors.imaging.preservation import product_region

SIZE = 512


def _packshot() -> Image.Image:
    """A bottle on a white backdrop, no alpha: the mask is computed from the colours."""
    image = Image.new("RGB", (600, 800), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    draw.rounded_rectangle((200, 200, 400, 750), radius=50, fill=(30, 60, 130))
    draw.rectangle((260, 75, 340, 210), fill=(40, 40, 46))
    draw.rectangle((200, 400, 400, 550), fill=(236, 200, 60))
    draw.line((220, 475, 380, 475), fill=(200, 20, 20), width=12)
    draw.ellipse((250, 600, 350, 700), fill=(230, 230, 235))
    return image


def _textured() -> Image.Image:
    """An RGBA cut-out with structure at every scale: smooth noise on a soft-edged ellipse."""
    rng = np.random.default_rng(14)
    noise = rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)
    body = Image.fromarray(noise, "RGB").resize((480, 576), Image.Resampling.BICUBIC)
    alpha = Image.new("L", body.size, 0)
    ImageDraw.Draw(alpha).ellipse((20, 20, 460, 556), fill=255)
    alpha = alpha.filter(ImageFilter.GaussianBlur(3))
    body.putalpha(alpha)
    return body


def _backdrop(seed: int) -> Image.Image:
    """A lit gradient with grain, standing in for a generated scene."""
    rng = np.random.default_rng(seed)
    ys = np.linspace(0.0, 1.0, SIZE, dtype=np.float32)[:, None, None]
    top, bottom = rng.uniform(120, 230, 3), rng.uniform(120, 230, 3)
    pixels = top + (bottom - top) * ys + rng.normal(0, 3, (SIZE, SIZE, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def _pasted(
    product: Image.Image, mask: Image.Image, fit: float, at: tuple[float, float], seed: int
) -> Image.Image:
    """The product's cut-out at ``fit`` of the frame, centred at ``at`` (fractions), on a backdrop."""
    rgba = product.convert("RGB")
    rgba.putalpha(mask)
    box = mask.getbbox()
    assert box is not None
    cut = rgba.crop(box)
    scale = fit * SIZE / max(cut.size)
    cut = cut.resize((round(cut.width * scale), round(cut.height * scale)), Image.Resampling.LANCZOS)
    canvas = _backdrop(seed)
    canvas.paste(cut, (round(at[0] * SIZE - cut.width / 2), round(at[1] * SIZE - cut.height / 2)), cut)
    return canvas


def _jpeg(image: Image.Image, quality: int = 85) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue()))


def _mask_of_packshot() -> Image.Image:
    packshot = np.asarray(_packshot(), dtype=np.int16)
    return Image.fromarray(((255 - packshot).max(axis=2) > 12).astype(np.uint8) * 255, "L")


def _recoloured(image: Image.Image) -> Image.Image:
    r, g, b = image.convert("RGB").split()
    return Image.merge("RGB", (b, r, g))


def _brighter(image: Image.Image, amount: int) -> Image.Image:
    return Image.fromarray(np.clip(np.asarray(image, np.int16) + amount, 0, 255).astype(np.uint8), "RGB")


def _noisy(image: Image.Image, sigma: float, seed: int) -> Image.Image:
    noise = np.random.default_rng(seed).normal(0, sigma, (image.height, image.width, 3))
    return Image.fromarray(np.clip(np.asarray(image, np.float64) + noise, 0, 255).astype(np.uint8), "RGB")


@functools.cache
def _cases() -> dict[str, tuple[Image.Image, Image.Image, Image.Image | None]]:
    """name -> (output, product, mask): what quality scores, with what it scores against."""
    packshot, textured = _packshot(), _textured()
    packshot_mask, textured_mask = _mask_of_packshot(), textured.getchannel("A")
    return {
        "packshot_centred": (_pasted(packshot, packshot_mask, 0.7, (0.5, 0.56), 1), packshot, packshot_mask),
        "packshot_small_offset": (
            _pasted(packshot, packshot_mask, 0.35, (0.3, 0.4), 2),
            packshot,
            packshot_mask,
        ),
        "packshot_jpeg": (
            _jpeg(_pasted(packshot, packshot_mask, 0.6, (0.55, 0.5), 3)),
            packshot,
            packshot_mask,
        ),
        "packshot_own_mask": (_pasted(packshot, packshot_mask, 0.7, (0.5, 0.56), 4), packshot, None),
        "packshot_recoloured": (
            _recoloured(_pasted(packshot, packshot_mask, 0.7, (0.5, 0.56), 5)),
            packshot,
            packshot_mask,
        ),
        "packshot_absent": (_backdrop(6), packshot, packshot_mask),
        "textured_centred": (_pasted(textured, textured_mask, 0.75, (0.5, 0.55), 7), textured, textured_mask),
        "textured_jpeg_low": (
            _jpeg(_pasted(textured, textured_mask, 0.5, (0.6, 0.45), 8), quality=60),
            textured,
            textured_mask,
        ),
        "textured_blurred": (
            _pasted(textured, textured_mask, 0.75, (0.5, 0.55), 9).filter(ImageFilter.GaussianBlur(4)),
            textured,
            textured_mask,
        ),
        "textured_blur_light": (
            _pasted(textured, textured_mask, 0.6, (0.45, 0.5), 11).filter(ImageFilter.GaussianBlur(1.2)),
            textured,
            textured_mask,
        ),
        "textured_brighter": (
            _brighter(_pasted(textured, textured_mask, 0.7, (0.5, 0.5), 12), 22),
            textured,
            textured_mask,
        ),
        "packshot_brighter": (
            _brighter(_pasted(packshot, packshot_mask, 0.5, (0.5, 0.5), 13), 25),
            packshot,
            packshot_mask,
        ),
        "packshot_noisy": (
            _noisy(_pasted(packshot, packshot_mask, 0.45, (0.6, 0.55), 14), 18, 14),
            packshot,
            packshot_mask,
        ),
        "textured_noisy": (
            _noisy(_pasted(textured, textured_mask, 0.8, (0.5, 0.5), 15), 25, 15),
            textured,
            textured_mask,
        ),
        "textured_on_noise": (
            Image.fromarray(np.random.default_rng(10).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)),
            textured,
            textured_mask,
        ),
    }


# Measured on the code before the speed-ups (see the module docstring).
PINNED: dict[str, dict[str, float]] = {
    "packshot_absent": {"preservation": 0.0, "product_region": 0.24725},
    "packshot_brighter": {"preservation": 0.391077, "product_region": 0.24725},
    "packshot_centred": {"preservation": 1.0, "product_region": 0.24725},
    "packshot_jpeg": {"preservation": 1.0, "product_region": 0.24725},
    "packshot_noisy": {"preservation": 1.0, "product_region": 0.24725},
    "packshot_own_mask": {"preservation": 1.0, "product_region": 0.243625},
    "packshot_recoloured": {"preservation": 0.0, "product_region": 0.24725},
    "packshot_small_offset": {"preservation": 1.0, "product_region": 0.24725},
    "textured_blur_light": {"preservation": 1.0, "product_region": 0.65077},
    "textured_blurred": {"preservation": 0.203031, "product_region": 0.65077},
    "textured_brighter": {"preservation": 0.546735, "product_region": 0.65077},
    "textured_centred": {"preservation": 1.0, "product_region": 0.65077},
    "textured_jpeg_low": {"preservation": 0.592918, "product_region": 0.65077},
    "textured_noisy": {"preservation": 1.0, "product_region": 0.65077},
    "textured_on_noise": {"preservation": 0.0, "product_region": 0.65077},
}
PINNED_VERDICTS: dict[str, list[str]] = {
    "packshot_absent": ["product_not_preserved"],
    "packshot_brighter": ["product_not_preserved"],
    "packshot_centred": [],
    "packshot_jpeg": [],
    "packshot_noisy": [],
    "packshot_own_mask": [],
    "packshot_recoloured": ["product_not_preserved"],
    "packshot_small_offset": [],
    "textured_blur_light": [],
    "textured_blurred": ["product_not_preserved"],
    "textured_brighter": ["product_not_preserved"],
    "textured_centred": [],
    "textured_jpeg_low": ["product_not_preserved"],
    "textured_noisy": [],
    "textured_on_noise": ["product_not_preserved"],
}
PINNED_PLACEMENTS: dict[str, tuple[int, int, int, int]] = {
    "packshot_absent": (408, 4, 37, 124),
    "packshot_brighter": (218, 128, 76, 255),
    "packshot_centred": (203, 109, 106, 356),
    "packshot_jpeg": (236, 104, 90, 304),
    "packshot_noisy": (274, 168, 67, 227),
    "packshot_own_mask": (203, 109, 105, 356),
    "packshot_recoloured": (236, 116, 41, 136),
    "packshot_small_offset": (127, 115, 54, 181),
    "textured_blur_light": (110, 108, 241, 294),
    "textured_blurred": (106, 98, 301, 368),
    "textured_brighter": (116, 86, 280, 342),
    "textured_centred": (106, 98, 301, 368),
    "textured_jpeg_low": (208, 108, 199, 243),
    "textured_noisy": (96, 60, 321, 392),
    "textured_on_noise": (272, 276, 84, 102),
}
PINNED_BASIC: dict[str, dict[str, float]] = {
    "packshot_absent": {
        "blank_score": 0.14387786065057329,
        "std": 20.54693134438624,
        "edge": 2.3382924479166665,
        "mean": 184.25678858947754,
    },
    "packshot_brighter": {
        "blank_score": 0.0,
        "std": 36.791430689456284,
        "edge": 3.208335309436274,
        "mean": 199.67389747619626,
    },
    "packshot_centred": {
        "blank_score": 0.0,
        "std": 49.7323418140267,
        "edge": 3.507808731617647,
        "mean": 177.55396728515626,
    },
    "packshot_jpeg": {
        "blank_score": 0.0,
        "std": 36.638281932639835,
        "edge": 3.1671771446078445,
        "mean": 144.93523333740234,
    },
    "packshot_noisy": {
        "blank_score": 0.0,
        "std": 34.53326258225562,
        "edge": 14.052929580269605,
        "mean": 182.85061207580566,
    },
    "packshot_own_mask": {
        "blank_score": 0.0,
        "std": 50.492392838628,
        "edge": 3.478771675857842,
        "mean": 171.61553164672853,
    },
    "packshot_recoloured": {
        "blank_score": 0.0,
        "std": 46.467067108514705,
        "edge": 3.278420986519608,
        "mean": 166.54450112915038,
    },
    "packshot_small_offset": {
        "blank_score": 0.19745712906707047,
        "std": 19.261028902390308,
        "edge": 2.9299290134803915,
        "mean": 162.54849462890624,
    },
    "textured_blur_light": {
        "blank_score": 0.0,
        "std": 42.19282931288799,
        "edge": 6.69386881127451,
        "mean": 147.06690826416016,
    },
    "textured_blurred": {
        "blank_score": 0.0,
        "std": 43.65918730340701,
        "edge": 4.254839950980392,
        "mean": 166.6382000579834,
    },
    "textured_brighter": {
        "blank_score": 0.0,
        "std": 47.38010846378133,
        "edge": 9.52002006740196,
        "mean": 179.85131632995603,
    },
    "textured_centred": {
        "blank_score": 0.0,
        "std": 52.9298165716849,
        "edge": 10.14643256740196,
        "mean": 164.30194004821777,
    },
    "textured_jpeg_low": {
        "blank_score": 0.0,
        "std": 41.01471108784833,
        "edge": 6.188217585784313,
        "mean": 190.732483795166,
    },
    "textured_noisy": {
        "blank_score": 0.0,
        "std": 51.88998892447082,
        "edge": 23.224046691176472,
        "mean": 158.43534606933594,
    },
    "textured_on_noise": {
        "blank_score": 0.0,
        "std": 36.90838572910071,
        "edge": 55.73117094056373,
        "mean": 127.90169744873047,
    },
}
PINNED_COMPOSITES: dict[str, str] = {
    "studio-1-packshot": "d6a43a98b16f7709 202,108,108,358",
    "kitchen-2-packshot": "6fb5108b64e26786 202,108,108,358",
    "outdoor-3-textured": "ca1236c47153941a 108,108,295,358",
    "holiday-4-textured": "bc5a475bf75b61f8 108,108,295,358",
}


def _scores(name: str) -> tuple[dict[str, float], list[str], tuple[int, int, int, int]]:
    output, product, mask = _cases()[name]
    scores = {**check_output(output, SIZE, SIZE), **preservation_scores(output, product, mask)}
    match = find_product(output, product, mask)
    return (
        scores,
        failed_reasons(scores, QualityThresholds.defaults()),
        (match.x, match.y, match.width, match.height),
    )


@pytest.mark.parametrize("name", sorted(_cases()))
def test_preservation_scores_and_verdicts_hold(name: str) -> None:
    scores, reasons, placement = _scores(name)
    pinned = PINNED[name]
    for key, value in pinned.items():
        assert scores[key] == pytest.approx(value, abs=1e-3), key
    assert reasons == PINNED_VERDICTS[name]
    if pinned["preservation"] < 0.05:
        return  # nothing found: where the best of the non-matches lies means nothing
    # Where the product was found: to within 2 px (a scale step of the search).
    assert all(abs(a - b) <= 2 for a, b in zip(placement, PINNED_PLACEMENTS[name], strict=True)), placement


def test_a_kept_region_scores_every_output_as_a_fresh_one() -> None:
    # The quality stage keeps a product's region (and the templates and spectra cached on it)
    # across jobs: scoring many outputs against one kept region, twice over, must give the pins.
    cases = _cases()
    regions = {}
    for _ in range(2):
        for name in sorted(cases):
            output, product, mask = cases[name]
            key = (id(product), id(mask))
            region = regions.setdefault(key, product_region(product, mask))
            scores = preservation_scores(output, product, mask, region)
            assert scores["preservation"] == pytest.approx(PINNED[name]["preservation"], abs=1e-3), name


@pytest.mark.parametrize("name", sorted(_cases()))
def test_basic_output_scores_hold(name: str) -> None:
    output = _cases()[name][0]
    scores = check_output(output, SIZE, SIZE)
    for key, value in PINNED_BASIC[name].items():
        assert scores[key] == pytest.approx(value, abs=1e-6), key


def _composite(scene: str, seed: int, product: str) -> tuple[Image.Image, str]:
    image = {"packshot": _packshot, "textured": _textured}[product]()
    mask = None if product == "packshot" else image.getchannel("A")
    picture, placement = composite_with_placement(image, mask, SIZE, SIZE, scene, seed)
    return picture, placement.as_text()


def _digest(picture: Image.Image) -> str:
    return hashlib.sha256(picture.tobytes()).hexdigest()[:16]


# The pinned composites themselves (PNG), made on the code before the speed-ups: their digests
# are the pins above. numpy picks its float32 exp and power kernels by the CPU (AVX-512 or not),
# and those may differ in the last bit, which can move a pixel by one level after rounding; so a
# composite is compared with its pinned pixels, not only by digest.
COMPOSITE_DIR = Path(__file__).with_name("data") / "composites"
# A channel value may differ by one level on at most this share of values (one CPU's float32
# kernels against another's: 1 value in 786,432 for the studio scene between AVX-512 and AVX2).
MAX_OFF_BY_ONE_SHARE = 1e-4


COMPOSITE_CASES = [
    ("studio", 1, "packshot"),
    ("kitchen", 2, "packshot"),
    ("outdoor", 3, "textured"),
    ("holiday", 4, "textured"),
]


@pytest.mark.parametrize(("scene", "seed", "product"), COMPOSITE_CASES)
def test_compositor_pixels_hold(scene: str, seed: int, product: str) -> None:
    name = f"{scene}-{seed}-{product}"
    digest, placement = PINNED_COMPOSITES[name].split(" ")
    with Image.open(COMPOSITE_DIR / f"{name}.png") as stored:
        pinned = stored.convert("RGB")
    assert _digest(pinned) == digest, f"{name}.png is not the pinned composite"
    picture, where = _composite(scene, seed, product)
    assert where == placement
    if _digest(picture) == digest:
        return
    off = np.abs(np.asarray(picture, np.int16) - np.asarray(pinned, np.int16))
    assert off.max() <= 1, f"{name}: a channel value moved by {off.max()} levels"
    assert np.count_nonzero(off) / off.size <= MAX_OFF_BY_ONE_SHARE, (
        f"{name}: {np.count_nonzero(off)} channel values off by one"
    )


if __name__ == "__main__":
    # `python -m tests.unit.test_score_pins`: what the code measures now, to compare with the pins.
    for case in sorted(_cases()):
        print(case, *_scores(case))
    for scene, seed, product in COMPOSITE_CASES:
        picture, placement = _composite(scene, seed, product)
        print(scene, seed, product, _digest(picture), placement)


def test_threads_scoring_one_product_at_once_compute_its_templates_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A stage may score outputs in several threads; when two are of one product, the second
    # thread must wait for the templates and spectra the first is computing, not redo them, and
    # both must score as the pins say.
    import threading

    from processors.imaging import preservation

    output, product, mask = _cases()["packshot_centred"]
    made = {"templates": 0, "kernels": 0}
    template_of, kernels_of = preservation._Template.of, preservation._Kernels.of

    def count_template(template: Image.Image) -> preservation._Template | None:
        made["templates"] += 1
        return template_of(template)

    def count_kernels(spectra: object, template: object) -> preservation._Kernels:
        made["kernels"] += 1
        return kernels_of(spectra, template)  # type: ignore[arg-type]

    monkeypatch.setattr(preservation._Template, "of", staticmethod(count_template))
    monkeypatch.setattr(preservation._Kernels, "of", staticmethod(count_kernels))
    preservation_scores(output, product, mask, product_region(product, mask))
    alone = dict(made)
    assert alone["templates"] > 0 and alone["kernels"] > 0

    made.update(templates=0, kernels=0)
    region = product_region(product, mask)
    start = threading.Barrier(2)
    scores: list[float] = []

    def score() -> None:
        start.wait()
        scores.append(preservation_scores(output, product, mask, region)["preservation"])

    threads = [threading.Thread(target=score) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert scores == [pytest.approx(PINNED["packshot_centred"]["preservation"], abs=1e-3)] * 2
    assert made == alone, "two threads computed more templates or spectra than one thread needs"
