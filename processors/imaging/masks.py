"""Product masks ("L" mode, 255 = product) from a product reference image.

A cut-out PNG already carries its mask in the alpha channel. Catalog photos usually do not, but
they are shot on a plain studio backdrop, so a classical segmentation is enough: estimate the
backdrop colour from the border, threshold the colour distance to it, clean up with a little
morphology, keep the dominant connected components and fill their holes. numpy and Pillow only:
scipy and opencv are not dependencies of the project.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

# An alpha channel is only a cut-out when some of it is really transparent: many tools write an
# all-opaque alpha channel, which says nothing about where the product is.
_ALPHA_OPAQUE = 250
_MIN_TRANSPARENT_FRACTION = 0.005
_MIN_OPAQUE_FRACTION = 0.001


@dataclass(frozen=True)
class SegmentationParams:
    # Strip of the image, as a fraction of its short side, assumed to be mostly backdrop.
    border_fraction: float = 0.02
    # Threshold = border distance percentile * scale + offset, clamped: adapts to noisy or
    # gradient backdrops while never dropping below what JPEG noise on a white backdrop needs.
    border_percentile: float = 80.0
    threshold_scale: float = 2.0
    threshold_offset: float = 10.0
    min_threshold: float = 18.0
    max_threshold: float = 60.0
    # Components smaller than this fraction of the largest are specks, not product parts
    # (a pair of shoes is two big components; JPEG ringing is many tiny ones).
    keep_ratio: float = 0.1
    max_components: int = 8
    # Morphology radii and feather, as fractions of the short side (about 2, 1 and 0.8 px at 512).
    close_fraction: float = 0.004
    open_fraction: float = 0.002
    feather_fraction: float = 0.0015
    # Larger images are segmented on a reduced copy.
    max_side: int = 1024


DEFAULT_PARAMS = SegmentationParams()


def compute_mask(image: Image.Image, params: SegmentationParams = DEFAULT_PARAMS) -> Image.Image:
    """The product mask of ``image``: its alpha when that is a real cut-out, else a segmentation.

    When the segmentation finds nothing that differs from the backdrop, the whole frame is taken
    as product: a close-up with no visible backdrop is more likely than an empty product photo,
    and a full mask keeps every pixel rather than discarding the product.
    """
    alpha = cutout_alpha(image)
    return alpha if alpha is not None else segment_studio(image, params)


def mask_coverage(mask: Image.Image) -> float:
    """Fraction of the frame covered by the product, in [0, 1] (soft edges count partially)."""
    # From the histogram: a float copy of a camera-sized mask would be hundreds of megabytes.
    counts = _histogram(mask)
    total = sum(counts)
    if total == 0:
        return 0.0
    return sum(level * count for level, count in enumerate(counts)) / (255.0 * total)


def _histogram(mask: Image.Image) -> list[int]:
    return (mask if mask.mode == "L" else mask.convert("L")).histogram()


_ALPHA_MODES = frozenset({"RGBA", "LA", "La", "RGBa", "PA"})


def has_alpha(image: Image.Image) -> bool:
    """Whether the image carries transparency at all (an alpha band or a transparent colour)."""
    return image.mode in _ALPHA_MODES or "transparency" in image.info


def alpha_channel(image: Image.Image) -> Image.Image | None:
    """The alpha channel as "L", or None when the image has no transparency at all."""
    if not has_alpha(image):
        return None
    if image.mode in _ALPHA_MODES and image.mode != "PA":
        return image.getchannel("A")
    return image.convert("RGBA").getchannel("A")


def cutout_alpha(image: Image.Image) -> Image.Image | None:
    """The alpha channel when ``image`` is a real cut-out (the catalog's own mask), else None."""
    alpha = alpha_channel(image)
    return alpha if alpha is not None and is_cutout_alpha(alpha) else None


def is_cutout_alpha(alpha: Image.Image) -> bool:
    counts = _histogram(alpha)
    total = sum(counts)
    if total == 0:
        return False
    transparent = sum(counts[:_ALPHA_OPAQUE]) / total
    opaque = sum(counts[128:]) / total
    return transparent >= _MIN_TRANSPARENT_FRACTION and opaque >= _MIN_OPAQUE_FRACTION


def segment_studio(image: Image.Image, params: SegmentationParams = DEFAULT_PARAMS) -> Image.Image:
    """Segment a product shot on a plain (possibly slightly graded) backdrop."""
    # convert() always copies, even to the same mode: a camera-sized RGB reference is used as is.
    rgb_image = image if image.mode == "RGB" else image.convert("RGB")
    if max(rgb_image.size) > params.max_side:
        # Camera-sized references: segment a reduced copy and scale the mask back up. The
        # soft, feathered edge hides the interpolation and memory stays bounded.
        scale = params.max_side / max(rgb_image.size)
        reduced = (max(1, round(rgb_image.width * scale)), max(1, round(rgb_image.height * scale)))
        small = rgb_image.resize(reduced, Image.Resampling.BOX)
        return _segment(small, params).resize(rgb_image.size, Image.Resampling.BILINEAR)
    return _segment(rgb_image, params)


def _segment(image: Image.Image, params: SegmentationParams) -> Image.Image:
    rgb = np.asarray(image, dtype=np.float32)
    height, width = rgb.shape[:2]
    short = min(height, width)
    border = max(2, round(short * params.border_fraction))

    border_pixels = _border_pixels(rgb, border)
    background = np.median(border_pixels, axis=0)
    distance = np.sqrt(np.sum((rgb - background) ** 2, axis=-1))
    border_distance = np.sqrt(np.sum((border_pixels - background) ** 2, axis=-1))
    threshold = float(
        np.clip(
            np.percentile(border_distance, params.border_percentile) * params.threshold_scale
            + params.threshold_offset,
            params.min_threshold,
            params.max_threshold,
        )
    )

    foreground = distance > threshold
    foreground = binary_close(foreground, max(1, round(short * params.close_fraction)))
    foreground = binary_open(foreground, max(1, round(short * params.open_fraction)))
    foreground = keep_largest_components(foreground, params.keep_ratio, params.max_components)
    foreground = fill_holes(foreground)
    if not foreground.any():
        return Image.new("L", (width, height), 255)

    alpha = _soft_edges(foreground, distance)
    mask = Image.fromarray(np.round(alpha * 255).astype(np.uint8), mode="L")
    feather = max(0.6, short * params.feather_fraction)
    return mask.filter(ImageFilter.GaussianBlur(radius=feather))


def _soft_edges(foreground: np.ndarray, distance: np.ndarray) -> np.ndarray:
    """Alpha in [0, 1]: solid inside, partial on the outer rim.

    The low threshold that keeps pale product parts also catches the blended rim pixels
    (antialiasing, JPEG ringing). Scoring each rim pixel by its colour distance relative to the
    nearby solid interior gives it the partial coverage it really has, which avoids a halo of
    backdrop colour when the cut-out is placed on another scene.
    """
    solid = binary_erode(foreground, 1)
    rim = foreground & ~solid
    interior_reach = max_filter(np.where(solid, distance, 0.0), 2)
    ratio = np.clip(distance / np.maximum(interior_reach, 1e-6), 0.0, 1.0)
    # Thin parts (straps, wires) have no solid interior to compare with: keep them whole.
    rim_alpha = np.where(interior_reach > 0, ratio, 1.0)
    return np.where(solid, 1.0, np.where(rim, rim_alpha, 0.0))


def _border_pixels(rgb: np.ndarray, border: int) -> np.ndarray:
    top, bottom = rgb[:border], rgb[-border:]
    left, right = rgb[border:-border, :border], rgb[border:-border, -border:]
    return np.concatenate([part.reshape(-1, 3) for part in (top, bottom, left, right)])


# --- morphology (square structuring element, separable) --------------------------------------


def binary_dilate(binary: np.ndarray, radius: int) -> np.ndarray:
    if radius <= 0:
        return binary.copy()
    rows = binary.copy()
    for k in range(1, radius + 1):
        rows[:, k:] |= binary[:, :-k]
        rows[:, :-k] |= binary[:, k:]
    out = rows.copy()
    for k in range(1, radius + 1):
        out[k:, :] |= rows[:-k, :]
        out[:-k, :] |= rows[k:, :]
    return out


def max_filter(values: np.ndarray, radius: int) -> np.ndarray:
    """Grey-level dilation with a (2r+1)^2 square."""
    rows = values.copy()
    for k in range(1, radius + 1):
        np.maximum(rows[:, k:], values[:, :-k], out=rows[:, k:])
        np.maximum(rows[:, :-k], values[:, k:], out=rows[:, :-k])
    out = rows.copy()
    for k in range(1, radius + 1):
        np.maximum(out[k:, :], rows[:-k, :], out=out[k:, :])
        np.maximum(out[:-k, :], rows[k:, :], out=out[:-k, :])
    return out


def binary_erode(binary: np.ndarray, radius: int) -> np.ndarray:
    # Outside the frame counts as foreground here, so products touching the edge are not eaten.
    return ~binary_dilate(~binary, radius)


def binary_close(binary: np.ndarray, radius: int) -> np.ndarray:
    return binary_erode(binary_dilate(binary, radius), radius)


def binary_open(binary: np.ndarray, radius: int) -> np.ndarray:
    return binary_dilate(binary_erode(binary, radius), radius)


# --- connected components over row runs --------------------------------------------------------
# Labelling runs instead of pixels keeps the Python loop proportional to the number of runs
# (a few thousand for a product shot), which makes a pure numpy implementation fast enough.


@dataclass(frozen=True)
class _Runs:
    rows: np.ndarray
    starts: np.ndarray
    ends: np.ndarray  # exclusive

    def __len__(self) -> int:
        return int(self.rows.size)


def _find_runs(binary: np.ndarray) -> _Runs:
    height, width = binary.shape
    padded = np.zeros((height, width + 2), dtype=np.int8)
    padded[:, 1:-1] = binary
    edges = np.diff(padded, axis=1)
    start_rows, starts = np.nonzero(edges == 1)
    _, ends = np.nonzero(edges == -1)
    return _Runs(start_rows, starts, ends)


def _component_ids(runs: _Runs, height: int, connectivity: int) -> np.ndarray:
    """Component id (0..n-1) of every run."""
    parent = list(range(len(runs)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    # Diagonal neighbours touch under 8-connectivity, so runs may be one pixel apart.
    slack = 1 if connectivity == 8 else 0
    row_offsets = np.searchsorted(runs.rows, np.arange(height + 1))
    starts, ends = runs.starts.tolist(), runs.ends.tolist()
    for row in range(1, height):
        a, a_end = int(row_offsets[row - 1]), int(row_offsets[row])
        b, b_end = a_end, int(row_offsets[row + 1])
        while a < a_end and b < b_end:
            if starts[a] < ends[b] + slack and starts[b] < ends[a] + slack:
                root_a, root_b = find(a), find(b)
                if root_a != root_b:
                    parent[root_b] = root_a
            # Advance whichever run finishes first; the other may still touch the next one.
            if ends[a] < ends[b]:
                a += 1
            else:
                b += 1

    roots = np.fromiter((find(i) for i in range(len(runs))), dtype=np.int64, count=len(runs))
    _, ids = np.unique(roots, return_inverse=True)
    return ids.reshape(-1)


def _paint(shape: tuple[int, int], runs: _Runs, selected: np.ndarray) -> np.ndarray:
    out = np.zeros(shape, dtype=bool)
    for row, start, end in zip(
        runs.rows[selected].tolist(),
        runs.starts[selected].tolist(),
        runs.ends[selected].tolist(),
        strict=True,
    ):
        out[row, start:end] = True
    return out


def keep_largest_components(binary: np.ndarray, keep_ratio: float, max_components: int) -> np.ndarray:
    """Only the components at least ``keep_ratio`` of the largest one (8-connected), at most N."""
    runs = _find_runs(binary)
    if len(runs) == 0:
        return binary.copy()
    ids = _component_ids(runs, binary.shape[0], connectivity=8)
    areas = np.bincount(ids, weights=(runs.ends - runs.starts).astype(np.float64))
    order = np.argsort(-areas, kind="stable")[:max_components]
    kept = order[areas[order] >= keep_ratio * areas[order[0]]]
    return _paint(binary.shape, runs, np.isin(ids, kept))


def fill_holes(binary: np.ndarray) -> np.ndarray:
    """Set every background region that does not reach the frame edge (4-connected)."""
    background = ~binary
    runs = _find_runs(background)
    if len(runs) == 0:
        return binary.copy()
    height, width = binary.shape
    ids = _component_ids(runs, height, connectivity=4)
    touches = (runs.rows == 0) | (runs.rows == height - 1) | (runs.starts == 0) | (runs.ends == width)
    open_ids = np.unique(ids[touches])
    holes = ~np.isin(ids, open_ids)
    return binary | _paint(binary.shape, runs, holes)
