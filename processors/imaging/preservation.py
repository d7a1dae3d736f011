"""Product preservation: how well the stored product's pixels appear in a generated output.

Masked template matching: the product's masked pixels are searched for in the output over a
range of scales and every position, first coarsely over the whole frame, then finely around the
best coarse hit. A position scores by correlation (does the structure match?) times colour
fidelity (is it the same colours, not a recoloured look-alike?). All correlations are computed
with FFTs, so the whole search is a few dozen small FFTs. The product is cut out by the one
framing rule (processors.imaging.framing), cropped to its solid core.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from PIL import Image, ImageChops

from processors.imaging.framing import SOLID_ALPHA, cutout, product_mask, to_rgb
from processors.imaging.masks import alpha_channel

_COARSE_SIZE = 128
_FINE_SIZE = 256
_FIT_MIN, _FIT_MAX, _FIT_STEP = 0.2, 1.0, 1.1
# Refinement rounds around the best match so far: (spread either side as a scale factor, fits).
# The first spans one coarse step either side (the coarse winner may be a neighbour of the true
# scale); the second settles the scale to under 1%, which fine product detail needs.
_REFINE_ROUNDS = ((_FIT_STEP, 9), (_FIT_STEP**0.25, 7))
_MIN_TEMPLATE_PIXELS = 24
# Template pixels whose alpha (after resizing) is at or above SOLID_ALPHA are solid product:
# the soft rim blends with whatever background the output has, so it says nothing about
# preservation.
# RMSE (0..255) fully tolerated (resampling, JPEG), and the RMSE at which colour fidelity is zero.
# Calibrated on compositor outputs: the product itself stays under 15, other content of similar
# colours sits above 24.
_RMSE_OK, _RMSE_BAD = 15.0, 35.0
# Correlation at or below which structure counts as unrelated, and at or above which it is the
# same: resampled copies of the product correlate above 0.97, look-alikes rarely above 0.85.
_NCC_LOW, _NCC_HIGH = 0.6, 0.95
_RANK_WEIGHT = 1e-3
# Template std below which its structure is too flat for correlation to mean anything.
_FLAT_STD = 8.0
# A region covering at least this much of the reference's frame and flatter than this (per
# channel std) is a placeholder, not a product: nothing in it could be recognised in an output.
_FULL_FRAME = 0.98
_FLAT_REGION_STD = 2.0
# Resized templates a region keeps (a search needs about 35 per output size; they are small).
_TEMPLATES_PER_REGION = 160
# Bytes of template spectra a region keeps: the kernels' FFTs depend only on the template and
# the padded shape of the searched image, and the outputs of one product at one size search the
# same shapes (the whole frame coarsely, then the same window when the product sits in the same
# place), so a second output costs only the searched image's FFTs and the inverse ones. One
# output size's worth: a 512 px output keeps 17-28 MB (the bigger the product, the bigger the
# refinement windows); a quality stage keeps REGIONS_KEPT regions.
_KERNEL_BYTES_PER_REGION = 32 * 2**20
# The searched pixels, the templates' arrays and so every spectrum and score map are single
# precision: a search with its templates kept costs 20-27% less CPU than in double precision,
# and on the pinned images the scores move by at most 3.1e-6, no location by a pixel (pixel
# values are 8-bit; tests/unit/test_score_pins.py holds them to 1e-3). Where many positions tie
# (score 0 on a flat output) the one reported may differ: rounding picks among equals. A
# template's own statistics (means, variance, sums) stay double.
_WORK_DTYPE = np.float32
_T = TypeVar("_T")


@dataclass(frozen=True)
class PreservationMatch:
    score: float
    fit: float  # product size as a fraction of the output (fit on both axes)
    x: int  # top-left of the product's bounding box in the output, pixels
    y: int
    width: int
    height: int
    # Ranking key: the score plus a tiny unsaturated closeness term, so that among positions
    # that all score 1.0 the truly aligned one wins (the score saturates on purpose).
    rank: float = 0.0


@dataclass(frozen=True)
class ProductRegion:
    """The part of a product reference preservation is scored over: its solid core.

    A caller that scores many outputs against one product (the quality stage) keeps its region:
    the templates resized from it for each search size are kept on it too, so a second output
    of the same size costs no resampling of the product."""

    # The solid core as RGBA, cropped to it; None when the region is empty.
    cutout: Image.Image | None
    pixels: int  # solid product pixels in the reference
    coverage: float  # those pixels as a fraction of the reference's frame (0 when empty)
    why_empty: str = ""
    _templates: dict[tuple[int, int, int, int], _Template | None] = field(
        default_factory=dict, compare=False, repr=False
    )
    _kernels: dict[tuple[int, ...], _Kernels] = field(default_factory=dict, compare=False, repr=False)
    _kernel_bytes: list[int] = field(default_factory=lambda: [0], compare=False, repr=False)
    # Guards the caches above. A missing entry is made under a lock of its own key (_making), so a
    # second thread scoring the same product waits for what the first is computing instead of
    # computing it again.
    _lock: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False)
    _making: dict[tuple[int, ...], threading.Lock] = field(default_factory=dict, compare=False, repr=False)

    @property
    def empty(self) -> bool:
        return self.cutout is None

    def shrunk(self, longest: int) -> Image.Image:
        """The cut-out no longer than ``longest`` px (kept, like the templates)."""
        assert self.cutout is not None
        cutout = self.cutout
        key = (-1, longest, 0, 0)

        def make() -> _Template:
            entry = _Template(source=_shrink(cutout, longest))
            with self._lock:
                self._templates[key] = entry
            return entry

        kept = self._once(self._templates, key, make)
        assert kept is not None and kept.source is not None  # this key only ever holds a source
        return kept.source

    def template(self, source: Image.Image, size: tuple[int, int]) -> _Template | None:
        """The cut-out (as shrunk to ``source``) resized to ``size``, as the arrays a match needs
        (None, and kept as None, when too few solid pixels are left to match)."""
        key = (source.width, source.height, *size)

        def make() -> _Template | None:
            found = _Template.of(source.resize(size, Image.Resampling.LANCZOS))
            with self._lock:
                if len(self._templates) >= _TEMPLATES_PER_REGION:
                    self._templates.clear()  # a product scored at many sizes: start again, bounded
                self._templates[key] = found
            return found

        return self._once(self._templates, key, make)

    def kernels(self, source: Image.Image, template: _Template, spectra: _Spectra) -> _Kernels:
        """The conjugate spectra of ``template`` (as resized from ``source``) padded to the
        searched image's FFT shape: the same arrays every time, computed once while kept."""
        assert template.weights is not None
        key = (source.width, source.height, *template.weights.shape, *spectra.shape)

        def make() -> _Kernels:
            found = _Kernels.of(spectra, template)
            with self._lock:
                if self._kernel_bytes[0] + found.nbytes > _KERNEL_BYTES_PER_REGION:
                    self._kernels.clear()  # bounded: start again
                    self._kernel_bytes[0] = 0
                self._kernels[key] = found
                self._kernel_bytes[0] += found.nbytes
            return found

        return self._once(self._kernels, key, make)

    def _once(self, cache: dict[Any, _T], key: tuple[int, ...], make: Callable[[], _T]) -> _T:
        """``cache[key]``, else what ``make`` makes (and keeps there), made by one thread at a time
        per key: a thread needing a key another is making waits for it and takes it; threads
        needing different keys work side by side."""
        with self._lock:
            if key in cache:
                return cache[key]
            making = self._making.setdefault(key, threading.Lock())
        with making:
            with self._lock:
                if key in cache:
                    return cache[key]
            try:
                return make()
            finally:
                with self._lock:
                    self._making.pop(key, None)


def product_region(product: Image.Image, mask: Image.Image | None) -> ProductRegion:
    """The product's solid region: the mask (or the product's own) limited to the pixels the
    product shows, at or above SOLID_ALPHA.

    Empty, so that preservation scores 0 and never 1, when there is nothing to find: no solid
    pixel, fewer than a template needs, or a whole frame of one colour (a placeholder or a blank
    reference under a full mask would otherwise "match" any flat patch of that colour). A
    transparent pixel is never product, whatever a mask computed from the colours hidden under
    it claims.
    """
    region = product_mask(product, mask)
    alpha = alpha_channel(product)
    if alpha is not None:
        region = ImageChops.darker(region, alpha)
    counts = region.histogram()
    pixels = sum(counts[math.ceil(SOLID_ALPHA) :])
    frame = product.width * product.height
    if pixels < _MIN_TEMPLATE_PIXELS:
        return ProductRegion(None, pixels, 0.0, f"{pixels} solid product pixels")
    solid = cutout(product, region, min_alpha=SOLID_ALPHA)
    if solid is None:  # unreachable with pixels > 0; kept for the type
        return ProductRegion(None, 0, 0.0, "no solid product pixel")
    coverage = pixels / frame
    if coverage >= _FULL_FRAME and _flat(solid):
        return ProductRegion(None, pixels, 0.0, "a whole frame of one colour")
    return ProductRegion(solid, pixels, coverage)


def product_preservation(output: Image.Image, product: Image.Image, mask: Image.Image | None) -> float:
    """How well the product's masked pixels appear in ``output``, in [0, 1]; 0 when the product
    region is empty (product_region)."""
    return find_product(output, product, mask).score


def find_product(
    output: Image.Image,
    product: Image.Image,
    mask: Image.Image | None,
    region: ProductRegion | None = None,
) -> PreservationMatch:
    """The best match of the product in ``output`` (score 0 and fit 0 when none is possible,
    an empty product region included)."""
    # Cropped to the solid core: the soft rim blends with the output's background.
    region = region or product_region(product, mask)
    none = PreservationMatch(0.0, 0.0, 0, 0, 0, 0)
    if region.empty:
        return none
    out_rgb = to_rgb(output)
    coarse_fits = _geometric(_FIT_MIN, _FIT_MAX, _FIT_STEP)
    coarse = _search(out_rgb, (0, 0, *out_rgb.size), region, coarse_fits, _COARSE_SIZE)
    if coarse is None:
        return none
    best = coarse
    for spread, count in _REFINE_ROUNDS:
        found = _search(
            out_rgb,
            _window(best, out_rgb.size),
            region,
            _spread(best.fit, spread, count),
            _FINE_SIZE,
        )
        if found is not None and found.rank >= best.rank:
            best = found
    return best


def _flat(solid: Image.Image) -> bool:
    """Whether the solid pixels are all one colour (to within JPEG noise)."""
    small = _shrink(solid, 256)
    rgba = np.asarray(small, dtype=np.float64)
    inside = rgba[..., 3] >= SOLID_ALPHA
    if not inside.any():
        return True
    return bool(rgba[..., :3][inside].std(axis=0).max() < _FLAT_REGION_STD)


def _window(match: PreservationMatch, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The region around a match that a refinement searches (room for scale and shift)."""
    margin = round(0.06 * max(size)) + 4
    return (
        max(0, match.x - margin),
        max(0, match.y - margin),
        min(size[0], match.x + match.width + margin),
        min(size[1], match.y + match.height + margin),
    )


def _spread(fit: float, spread: float, count: int) -> list[float]:
    half = (count - 1) / 2
    fits = (fit * spread ** ((i - half) / half) for i in range(count))
    return [f for f in fits if f <= 1.0 + 1e-9]


def _geometric(low: float, high: float, step: float) -> list[float]:
    count = math.floor(math.log(high / low) / math.log(step)) + 1
    return [*(low * step**i for i in range(count)), high]


def _search(
    output: Image.Image,
    window: tuple[int, int, int, int],
    region: ProductRegion,
    fits: list[float],
    work_size: int,
) -> PreservationMatch | None:
    """Best match over ``fits`` inside ``window`` of ``output``, searched at ``work_size``."""
    cutout = region.cutout
    assert cutout is not None
    full_w, full_h = output.size
    crop = output.crop(window)
    ratio = min(1.0, work_size / max(full_w, full_h))
    work = crop.resize(
        (max(1, round(crop.width * ratio)), max(1, round(crop.height * ratio))),
        Image.Resampling.LANCZOS,
    )
    spectra = _Spectra(np.asarray(work, dtype=_WORK_DTYPE))
    source = region.shrunk(2 * max(work.size))
    best: PreservationMatch | None = None
    for fit in fits:
        scale = min(fit * full_w / cutout.width, fit * full_h / cutout.height)
        size_full = (round(cutout.width * scale), round(cutout.height * scale))
        size_work = (round(size_full[0] * ratio), round(size_full[1] * ratio))
        if not (0 < size_work[0] <= work.width and 0 < size_work[1] <= work.height):
            continue
        template = region.template(source, size_work)
        if template is None:
            continue
        found = _match(spectra, template, region.kernels(source, template, spectra))
        if found is None:
            continue
        score, rank, (row, col) = found
        if best is None or rank > best.rank:
            best = PreservationMatch(
                rank=rank,
                score=score,
                fit=fit,
                x=window[0] + round(col / ratio),
                y=window[1] + round(row / ratio),
                width=size_full[0],
                height=size_full[1],
            )
    return best


def _fast_length(n: int) -> int:
    """Smallest 2^a 3^b 5^c >= n: pocketfft is slow on sizes with large prime factors."""
    best = 1 << max(0, (n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            size = p35
            while size < n:
                size *= 2
            best = min(best, size)
            p35 *= 3
        p5 *= 5
    return best


def _shrink(image: Image.Image, longest: int) -> Image.Image:
    """A copy no longer than ``longest`` px: resizing a big cut-out for every scale is the cost."""
    if max(image.size) <= longest:
        return image
    scale = longest / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS)


class _Spectra:
    """FFTs of the searched image per channel, and of its squares summed over channels,
    computed once per search."""

    def __init__(self, image: np.ndarray) -> None:
        self.valid = image.shape[:2]
        self.shape = (_fast_length(image.shape[0]), _fast_length(image.shape[1]))
        self.image = [np.fft.rfft2(image[..., c], s=self.shape) for c in range(3)]
        self.square = np.fft.rfft2((image**2).sum(axis=2), s=self.shape)

    def kernel(self, kernel: np.ndarray) -> np.ndarray:
        return np.conj(np.fft.rfft2(kernel, s=self.shape))

    def correlate(self, product: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """The inverse of a product of spectra (image x conjugate kernel): sum_x kernel[x] *
        image[u + x] for every offset u where the kernel fits (no wrap)."""
        full = np.fft.irfft2(product, s=self.shape)
        return full[: self.valid[0] - size[0] + 1, : self.valid[1] - size[1] + 1]


@dataclass(frozen=True)
class _Template:
    """A resized template as the arrays a match needs (independent of the searched image)."""

    weights: np.ndarray | None = None  # 1 on solid product pixels, else 0
    centred: np.ndarray | None = None  # per channel, weights * (colour - its mean), HxWx3
    means: tuple[float, float, float] = (0.0, 0.0, 0.0)
    count: float = 0.0
    template_var: float = 0.0
    sum_t2: float = 0.0  # sum over channels of sum M T^2
    source: Image.Image | None = None  # only on the shrunk cut-out's entry

    @classmethod
    def of(cls, template: Image.Image) -> _Template | None:
        rgba = np.asarray(template, dtype=np.float64)
        weights = (rgba[..., 3] >= SOLID_ALPHA).astype(np.float64)
        count = float(weights.sum())
        if count < _MIN_TEMPLATE_PIXELS:
            return None
        colours = rgba[..., :3]
        means = [float((weights * colours[..., c]).sum() / count) for c in range(3)]
        centred = weights[..., None] * (colours - np.asarray(means))
        return cls(
            weights=weights.astype(_WORK_DTYPE),
            centred=centred.astype(_WORK_DTYPE),
            means=(means[0], means[1], means[2]),
            count=count,
            template_var=float((centred**2).sum()),
            sum_t2=float((weights[..., None] * colours**2).sum()),
        )


@dataclass(frozen=True)
class _Kernels:
    """A template's conjugate spectra at one padded shape: of its weights and of each channel of
    its centred colours."""

    weights: np.ndarray
    centred: tuple[np.ndarray, np.ndarray, np.ndarray]

    @classmethod
    def of(cls, spectra: _Spectra, template: _Template) -> _Kernels:
        assert template.weights is not None and template.centred is not None
        centred = template.centred
        return cls(
            weights=spectra.kernel(template.weights),
            centred=(
                spectra.kernel(centred[..., 0]),
                spectra.kernel(centred[..., 1]),
                spectra.kernel(centred[..., 2]),
            ),
        )

    @property
    def nbytes(self) -> int:
        return self.weights.nbytes + sum(c.nbytes for c in self.centred)


@dataclass(frozen=True)
class _Scores:
    score: np.ndarray
    ncc: np.ndarray
    rmse: np.ndarray


def _match(
    spectra: _Spectra, template: _Template, kernels: _Kernels | None = None
) -> tuple[float, float, tuple[int, int]] | None:
    """(score, rank, (row, col)) of the best position for this template size."""
    scores = _match_scores(spectra, template, kernels or _Kernels.of(spectra, template))
    rank = scores.score + _RANK_WEIGHT * (scores.ncc - scores.rmse / 255.0)
    index = np.unravel_index(int(np.argmax(rank)), rank.shape)
    return float(scores.score[index]), float(rank[index]), (int(index[0]), int(index[1]))


def _match_scores(spectra: _Spectra, template: _Template, kernels: _Kernels) -> _Scores:
    """Masked correlation and colour distance at every offset. The sums over channels are taken
    in the frequency domain (the transform is linear), so a template costs five inverse FFTs:
    the masked sum of each channel (s1), and the channel sums of the masked squares (s2), of the
    cross term and of mean-weighted s1 come out of one each."""
    assert template.weights is not None and template.centred is not None
    count = template.count
    size = template.weights.shape
    weights_spec = kernels.weights
    cross_spec = sum(spectra.image[c] * kernels.centred[c] for c in range(3))
    s1 = [spectra.correlate(spectra.image[c] * weights_spec, size) for c in range(3)]
    s2 = spectra.correlate(spectra.square * weights_spec, size)
    numerator = spectra.correlate(cross_spec, size)
    image_var = s2 - (s1[0] ** 2 + s1[1] ** 2 + s1[2] ** 2) / count
    mean_s1 = template.means[0] * s1[0] + template.means[1] * s1[1] + template.means[2] * s1[2]
    # sum M (I - T)^2 = sum M I^2 - 2 sum M T I + sum M T^2, with sum M T I = cross + mean*s1.
    ssd = s2 - 2.0 * (numerator + mean_s1) + template.sum_t2

    rmse = np.sqrt(np.maximum(ssd, 0.0) / (3.0 * count))
    fidelity = np.clip(1.0 - (rmse - _RMSE_OK) / (_RMSE_BAD - _RMSE_OK), 0.0, 1.0)
    denom = np.sqrt(template.template_var * np.maximum(image_var, 1e-9))
    ncc = np.clip(numerator / np.maximum(denom, 1e-9), -1.0, 1.0)
    agreement = np.clip((ncc - _NCC_LOW) / (_NCC_HIGH - _NCC_LOW), 0.0, 1.0)
    # A flat-coloured product has no structure to correlate: lean on colour fidelity instead.
    structure = min(1.0, math.sqrt(template.template_var / (3.0 * count)) / _FLAT_STD)
    score = (structure * agreement + (1.0 - structure)) * fidelity
    return _Scores(score, ncc, rmse)
