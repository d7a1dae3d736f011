"""The CPU compositor backend: the product cut-out on a procedurally drawn scene.

It needs no model, so it is the backend of last resort when GPU pools are down, the fast path in
tests and demos, and a baseline the quality stage can always score. The product's pixels are
pasted as they are (resampled, never recoloured), which is the same promise the inpainting
backends make.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from gpu_workers.backends.base import GeneratedImage, GenerationItem
from processors.imaging.masks import alpha_channel, compute_mask, is_cutout_alpha

MODEL_VERSION = "compositor-1.0.0"

# The product fits in this fraction of the canvas on both axes.
DEFAULT_FILL = 0.70
# Vertical centre of the product as a fraction of the height: slightly low, so it sits on the
# "floor" of the scene and leaves headroom, as a photographer would frame it.
PRODUCT_CENTRE_Y = 0.56
# Mask values at or below this are treated as background when cropping to the product.
_BBOX_THRESHOLD = 8
# How many pixels deep solid product colour is grown into a segmented mask's soft rim.
_RIM_PASSES = 4

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class Placement:
    """Where the product landed on the canvas, in pixels."""

    x: int
    y: int
    width: int
    height: int

    def as_text(self) -> str:
        return f"{self.x},{self.y},{self.width},{self.height}"


@dataclass(frozen=True)
class Scene:
    name: str
    draw: Callable[[int, int, np.random.Generator], np.ndarray]  # -> float32 HxWx3 in 0..255
    shadow_rgb: RGB
    shadow_opacity: float


def composite(
    product: Image.Image,
    mask: Image.Image | None,
    width: int,
    height: int,
    scene: str,
    seed: int,
    fill: float = DEFAULT_FILL,
) -> Image.Image:
    """The product on ``scene`` at ``width`` x ``height``, RGB. Same inputs, same pixels."""
    return composite_with_placement(product, mask, width, height, scene, seed, fill)[0]


def composite_with_placement(
    product: Image.Image,
    mask: Image.Image | None,
    width: int,
    height: int,
    scene: str,
    seed: int,
    fill: float = DEFAULT_FILL,
) -> tuple[Image.Image, Placement]:
    if width <= 0 or height <= 0:
        raise ValueError(f"canvas size must be positive, got {width}x{height}")
    chosen = resolve_scene(scene)
    cutout = _cutout(product, mask)
    placement = place(cutout.size, width, height, fill)
    cutout = cutout.resize((placement.width, placement.height), Image.Resampling.LANCZOS)

    rng = np.random.default_rng(np.random.SeedSequence(seed % 2**64))
    background = chosen.draw(width, height, rng)
    background = _add_grain(background, rng)
    shadow = _shadow_alpha(cutout.getchannel("A"), placement, width, height)
    background = _apply_shadow(background, shadow, chosen.shadow_rgb, chosen.shadow_opacity)

    canvas = Image.fromarray(np.clip(np.round(background), 0, 255).astype(np.uint8), mode="RGB")
    # Pasting through the alpha keeps every fully-masked product pixel exactly as resampled.
    canvas.paste(cutout, (placement.x, placement.y), cutout)
    return canvas, placement


def resolve_scene(name: str) -> Scene:
    """The scene called ``name`` (case-insensitive); unknown names get the studio."""
    return SCENES.get(name.strip().lower(), SCENES["studio"])


# --- the product cut-out ---------------------------------------------------------------------


def _cutout(product: Image.Image, mask: Image.Image | None) -> Image.Image:
    """RGBA cropped to the product, alpha = mask.

    RGBA rather than RGB + separate mask because Pillow resizes RGBA premultiplied, so the
    arbitrary colours under transparent pixels do not bleed into the product's edge.
    """
    if mask is None:
        mask = compute_mask(product)
    mask = mask.convert("L")
    rgb = product.convert("RGBA").convert("RGB") if product.mode == "P" else product.convert("RGB")
    if mask.size != rgb.size:
        mask = mask.resize(rgb.size, Image.Resampling.BILINEAR)
    if not _is_cutout(product):
        rgb = _decontaminate_edges(rgb, mask)
    rgba = rgb.copy()
    rgba.putalpha(mask)
    bbox = mask.point(lambda v: 255 if v > _BBOX_THRESHOLD else 0).getbbox()
    return rgba.crop(bbox) if bbox else rgba


def _is_cutout(product: Image.Image) -> bool:
    alpha = alpha_channel(product)
    return alpha is not None and is_cutout_alpha(alpha)


def _decontaminate_edges(rgb: Image.Image, mask: Image.Image) -> Image.Image:
    """Replace the photo backdrop's colour in the partially covered rim pixels.

    In a packshot a rim pixel is a blend of product and backdrop; pasted as is on another scene
    it leaves a faint halo of the old backdrop. Rim pixels take the colour of the solid product
    next to them (the alpha still does the blending); where there is no solid pixel nearby (thin
    parts), the colour is unmixed from the backdrop estimate: C = a*F + (1 - a)*B. Fully covered
    pixels (a = 1) are left exactly as they are.
    """
    alpha = np.asarray(mask, np.float32) / 255.0
    backdrop = alpha < _BBOX_THRESHOLD / 255.0
    rim = (alpha < 1.0) & ~backdrop
    if not rim.any() or backdrop.mean() < 0.01:
        return rgb
    colours = np.asarray(rgb, np.float32)
    out = colours.copy()

    background = np.median(colours[backdrop], axis=0)
    a = alpha[rim][:, None]
    out[rim] = np.clip((colours[rim] - (1.0 - a) * background) / np.maximum(a, 1e-3), 0, 255)

    known = alpha >= 1.0
    for _ in range(_RIM_PASSES):
        grown_sum, grown_count = _neighbour_sum(np.where(known[..., None], out, 0.0), known)
        reach = rim & ~known & (grown_count > 0)
        if not reach.any():
            break
        out[reach] = grown_sum[reach] / grown_count[reach][:, None]
        known = known | reach
    return Image.fromarray(np.round(out).astype(np.uint8), mode="RGB")


def _neighbour_sum(values: np.ndarray, present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum of the 8 neighbours' values and how many of them are present."""
    total = np.zeros_like(values)
    count = np.zeros(present.shape, np.float32)
    padded_v = np.pad(values, ((1, 1), (1, 1), (0, 0)))
    padded_p = np.pad(present.astype(np.float32), 1)
    height, width = present.shape
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy == dx == 0:
                continue
            total += padded_v[1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width]
            count += padded_p[1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width]
    return total, count


def place(size: tuple[int, int], width: int, height: int, fill: float) -> Placement:
    """Where a product of `size` goes on a width x height canvas: every backend frames it so."""
    fill = min(max(fill, 0.05), 1.0)
    scale = min(fill * width / size[0], fill * height / size[1])
    w = max(1, min(width, round(size[0] * scale)))
    h = max(1, min(height, round(size[1] * scale)))
    x = (width - w) // 2
    y = min(max(0, round(PRODUCT_CENTRE_Y * height - h / 2)), height - h)
    return Placement(x, y, w, h)


# --- shadow ----------------------------------------------------------------------------------


def _shadow_alpha(alpha: Image.Image, placement: Placement, width: int, height: int) -> np.ndarray:
    """Shadow strength in [0, 1]: a soft offset silhouette plus a contact shadow at the base."""
    short = min(width, height)
    drop = Image.new("L", (width, height), 0)
    offset = (round(0.012 * width), round(0.018 * height))
    drop.paste(alpha, (placement.x + offset[0], placement.y + offset[1]))
    drop = drop.filter(ImageFilter.GaussianBlur(radius=max(1.0, 0.025 * short)))

    contact = Image.new("L", (width, height), 0)
    base_y = placement.y + placement.height
    half_w = 0.45 * placement.width
    half_h = max(2.0, 0.035 * placement.height)
    centre_x = placement.x + placement.width / 2
    ImageDraw.Draw(contact).ellipse(
        (centre_x - half_w, base_y - half_h, centre_x + half_w, base_y + half_h), fill=255
    )
    contact = contact.filter(ImageFilter.GaussianBlur(radius=max(1.0, 0.02 * short)))

    strength = 0.55 * np.asarray(drop, np.float32) + 0.8 * np.asarray(contact, np.float32)
    return np.clip(strength / 255.0, 0.0, 1.0)


def _apply_shadow(background: np.ndarray, shadow: np.ndarray, colour: RGB, opacity: float) -> np.ndarray:
    weight = (shadow * opacity)[..., None]
    return background * (1.0 - weight) + np.asarray(colour, np.float32) * weight


def _add_grain(background: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # A little monochrome grain hides 8-bit banding in the smooth gradients.
    grain = rng.normal(0.0, 1.2, size=background.shape[:2]).astype(np.float32)
    return background + grain[..., None]


# --- scenes ----------------------------------------------------------------------------------
# Each scene is drawn in float32 from normalised coordinates so it scales to any canvas; the seed
# moves lights, tints and layout a little, never enough to change what the scene is.


def _grid(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    ys = (np.arange(height, dtype=np.float32) + 0.5) / height
    xs = (np.arange(width, dtype=np.float32) + 0.5) / width
    return ys[:, None], xs[None, :]


def _lerp(a: np.ndarray | RGB, b: np.ndarray | RGB, t: np.ndarray) -> np.ndarray:
    a_ = np.asarray(a, np.float32)
    b_ = np.asarray(b, np.float32)
    return a_ + (b_ - a_) * t[..., None]


def _glow(ys: np.ndarray, xs: np.ndarray, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    return np.exp(-(((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2))


def _draw_studio(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    ys, xs = _grid(width, height)
    tint = rng.uniform(-5.0, 5.0, size=3).astype(np.float32)
    top = np.array((212, 216, 222), np.float32) + tint
    bottom = np.array((246, 246, 247), np.float32) + tint * 0.4
    # A seamless paper sweep: darker wall at the top curving into a bright floor.
    t = np.clip(ys / 0.75, 0.0, 1.0) ** 0.8 * np.ones_like(xs)
    image = _lerp(top, bottom, t)
    light = _glow(ys, xs, 0.5 + rng.uniform(-0.12, 0.12), 0.45 + rng.uniform(-0.08, 0.08), 0.45, 0.4)
    image += (16.0 + rng.uniform(-4.0, 4.0)) * light[..., None]
    vignette = 1.0 - 0.10 * ((xs - 0.5) ** 2 + (ys - 0.5) ** 2) / 0.5
    return np.clip(image * vignette[..., None], 0, 255)


def _draw_kitchen(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    ys, xs = _grid(width, height)
    tint = rng.uniform(-6.0, 6.0, size=3).astype(np.float32)
    wall_top = np.array((214, 196, 170), np.float32) + tint
    wall_low = np.array((241, 229, 208), np.float32) + tint
    counter_y = 0.64 + rng.uniform(-0.03, 0.03)
    wall = _lerp(wall_top, wall_low, np.clip(ys / counter_y, 0, 1) * np.ones_like(xs))

    # Backsplash tiles: faint grout lines between the counter and a third of the way up.
    tile = (0.07 + rng.uniform(0.0, 0.04)) * min(width, height) / width
    tile_y = tile * width / height
    grout_x = np.abs(((xs / tile) % 1.0) - 0.5) > 0.47
    grout_y = np.abs((((counter_y - ys) / tile_y) % 1.0) - 0.5) > 0.47
    in_splash = (ys > counter_y - 4 * tile_y) & (ys < counter_y)
    grout = (grout_x | grout_y) & in_splash
    wall = np.where(grout[..., None], wall * 0.93, wall)
    window = _glow(ys, xs, 0.2 + rng.uniform(-0.1, 0.1), 0.15, 0.35, 0.3)
    wall += 18.0 * window[..., None]

    # Wooden counter: warm, lighter towards the viewer, with seeded horizontal grain.
    wood_far = np.array((170, 124, 82), np.float32) + tint
    wood_near = np.array((206, 160, 112), np.float32) + tint
    depth = np.clip((ys - counter_y) / max(1e-6, 1.0 - counter_y), 0, 1) * np.ones_like(xs)
    counter = _lerp(wood_far, wood_near, depth)
    grain = np.zeros_like(depth)
    for _ in range(4):
        freq, phase, amp = rng.uniform(20, 60), rng.uniform(0, 2 * np.pi), rng.uniform(2, 5)
        grain += amp * np.sin(freq * ys * (1 + 0.15 * np.sin(3 * xs + phase)) + phase)
    counter += grain[..., None]

    image = np.where((ys < counter_y)[..., None], wall, counter)
    # The counter's front edge: a dark line with a thin highlight under it.
    edge = np.abs(ys - counter_y) * height
    image *= (1.0 - 0.35 * np.exp(-((edge / 1.5) ** 2)))[..., None]
    highlight = np.exp(-((((ys - counter_y) * height - 3.0) / 1.2) ** 2))
    image += 25.0 * highlight[..., None] * np.ones_like(xs)[..., None]
    return np.clip(image, 0, 255)


def _draw_outdoor(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    ys, xs = _grid(width, height)
    horizon = 0.62 + rng.uniform(-0.03, 0.03)
    sky_top = np.array((92, 146, 214), np.float32) + rng.uniform(-8, 8, size=3).astype(np.float32)
    sky_low = np.array((206, 226, 244), np.float32)
    sky = _lerp(sky_top, sky_low, np.clip(ys / horizon, 0, 1) ** 1.3 * np.ones_like(xs))
    sky = _add_clouds(sky, width, height, horizon, rng)

    # Distant hills: a soft blue-green ridge just above the horizon.
    ridge = horizon - 0.06 - 0.03 * np.sin(xs * rng.uniform(4, 8) + rng.uniform(0, 6.3))
    hills = (ys > ridge) & (ys < horizon)
    sky = np.where(hills[..., None], _lerp((120, 150, 140), (104, 140, 110), (ys - ridge) / 0.1), sky)

    grass_far = np.array((118, 160, 84), np.float32)
    grass_near = np.array((72, 122, 50), np.float32)
    depth = np.clip((ys - horizon) / max(1e-6, 1.0 - horizon), 0, 1) * np.ones_like(xs)
    ground = _lerp(grass_far, grass_near, depth)
    texture = rng.normal(0.0, 5.0, size=(height, width)).astype(np.float32)
    ground += texture[..., None] * np.array((0.6, 1.0, 0.5), np.float32)
    image = np.where((ys < horizon)[..., None], sky, ground)
    sun = _glow(ys, xs, rng.uniform(0.65, 0.9), rng.uniform(0.08, 0.2), 0.25, 0.2)
    return np.clip(image + 30.0 * sun[..., None], 0, 255)


def _add_clouds(
    sky: np.ndarray, width: int, height: int, horizon: float, rng: np.random.Generator
) -> np.ndarray:
    layer = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(layer)
    for _ in range(int(rng.integers(3, 6))):
        cx, cy = rng.uniform(0.0, 1.0) * width, rng.uniform(0.05, horizon * 0.7) * height
        for _ in range(4):
            rx = rng.uniform(0.06, 0.12) * width
            ry = rx * rng.uniform(0.35, 0.55)
            dx, dy = rng.uniform(-1, 1) * rx, rng.uniform(-0.4, 0.4) * ry
            draw.ellipse((cx + dx - rx, cy + dy - ry, cx + dx + rx, cy + dy + ry), fill=200)
    layer = layer.filter(ImageFilter.GaussianBlur(radius=max(1.0, 0.02 * min(width, height))))
    amount = np.asarray(layer, np.float32)[..., None] / 255.0
    return sky * (1 - amount) + 250.0 * amount


def _draw_holiday(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    ys, xs = _grid(width, height)
    table_y = 0.7 + rng.uniform(-0.03, 0.03)
    top = np.array((120, 18, 30), np.float32) + rng.uniform(-10, 10, size=3).astype(np.float32)
    low = np.array((176, 40, 46), np.float32)
    wall = _lerp(top, low, np.clip(ys / table_y, 0, 1) ** 0.9 * np.ones_like(xs))
    wall = _add_bokeh(wall, width, height, table_y, rng)
    # A snowy white tabletop with a cool shade towards the back.
    snow = _lerp((214, 220, 232), (246, 247, 250), np.clip((ys - table_y) / 0.3, 0, 1) * np.ones_like(xs))
    image = np.where((ys < table_y)[..., None], wall, snow)
    edge = np.abs(ys - table_y) * height
    image *= (1.0 - 0.2 * np.exp(-((edge / 2.0) ** 2)))[..., None]
    return np.clip(image, 0, 255)


def _add_bokeh(
    wall: np.ndarray, width: int, height: int, table_y: float, rng: np.random.Generator
) -> np.ndarray:
    layer = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    palette = ((255, 206, 96), (255, 236, 170), (255, 190, 70), (255, 248, 225))
    for _ in range(int(rng.integers(16, 26))):
        r = rng.uniform(0.015, 0.05) * min(width, height)
        cx, cy = rng.uniform(0, 1) * width, rng.uniform(0.0, table_y - 0.05) * height
        colour = palette[int(rng.integers(0, len(palette)))]
        alpha = int(rng.integers(110, 200))
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(*colour, alpha))
    layer = layer.filter(ImageFilter.GaussianBlur(radius=max(1.0, 0.006 * min(width, height))))
    rgba = np.asarray(layer, np.float32)
    amount = rgba[..., 3:4] / 255.0
    return wall * (1 - amount) + rgba[..., :3] * amount


SCENES: dict[str, Scene] = {
    "studio": Scene("studio", _draw_studio, (60, 62, 70), 0.45),
    "kitchen": Scene("kitchen", _draw_kitchen, (60, 38, 20), 0.5),
    "outdoor": Scene("outdoor", _draw_outdoor, (20, 40, 15), 0.5),
    "holiday": Scene("holiday", _draw_holiday, (70, 60, 80), 0.4),
}


# --- the backend -----------------------------------------------------------------------------


class CompositorBackend:
    """Backend protocol implementation; CPU-bound work runs off the event loop."""

    name = "compositor"
    model_version = MODEL_VERSION

    def batch_key(self, item: GenerationItem) -> tuple[object, ...]:
        return (item.params.width, item.params.height)

    async def generate(self, items: list[GenerationItem]) -> list[GeneratedImage]:
        # Checked before any work so a bad item fails the batch loudly instead of producing a
        # product shot without a product.
        missing = [item.request_id for item in items if item.product is None]
        if missing:
            raise ValueError(f"compositor needs a product reference; missing for {missing}")
        return await asyncio.to_thread(self._generate_all, items)

    async def healthy(self) -> bool:
        return True

    def _generate_all(self, items: list[GenerationItem]) -> list[GeneratedImage]:
        return [self._generate_one(item) for item in items]

    def _generate_one(self, item: GenerationItem) -> GeneratedImage:
        assert item.product is not None
        started = time.perf_counter()
        params = item.params
        scene = resolve_scene(item.scene)
        image, placement = composite_with_placement(
            item.product,
            item.mask,
            params.width,
            params.height,
            scene.name,
            params.seed,
            fill=_fill_option(params.option("fill")),
        )
        return GeneratedImage(
            request_id=item.request_id,
            image=image,
            model_version=MODEL_VERSION,
            compute_ms=(time.perf_counter() - started) * 1000.0,
            extra={"scene": scene.name, "placement": placement.as_text(), "seed": str(params.seed)},
        )


def _fill_option(raw: str) -> float:
    try:
        return float(raw) if raw else DEFAULT_FILL
    except ValueError:
        return DEFAULT_FILL
