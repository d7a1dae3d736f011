"""The compositor's scenes: backgrounds drawn procedurally, keyed by the one list of scene names.

Each scene is drawn in float32 from normalised coordinates so it scales to any canvas; the seed
moves lights, tints and layout a little, never enough to change what the scene is. The table is
keyed by processors.prompting.scenes.SCENE_NAMES and checked against it on import: a listed
scene without a drawing, or a drawing no template can ask for, stops the worker at start-up.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from gpu_workers.backends.base import DEFAULT_SCENE
from processors.prompting.scenes import SCENE_NAMES

RGB = tuple[int, int, int]
# (width, height, generator) -> float32 HxWx3 in 0..255
Drawing = Callable[[int, int, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class Scene:
    name: str
    draw: Drawing
    shadow_rgb: RGB
    shadow_opacity: float


def resolve_scene(name: str) -> Scene:
    """The scene called ``name`` (case-insensitive); unknown names get the default scene."""
    return SCENES.get(name.strip().lower(), SCENES[DEFAULT_SCENE])


def scene_rng(seed: int) -> np.random.Generator:
    """The generator a scene is drawn from (and, in the compositor, its grain after it): one per
    seed, whatever the seed's size, so the same seed draws the same scene in every backend."""
    return np.random.default_rng(np.random.SeedSequence(seed % 2**64))


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
    # A seamless paper sweep: darker wall at the top curving into a bright floor. The sweep
    # varies down the frame only: one column, blended once, then spread across by the light.
    t = np.clip(ys / 0.75, 0.0, 1.0) ** 0.8
    sweep = _lerp(top, bottom, t)
    light = _glow(ys, xs, 0.5 + rng.uniform(-0.12, 0.12), 0.45 + rng.uniform(-0.08, 0.08), 0.45, 0.4)
    image = sweep + (16.0 + rng.uniform(-4.0, 4.0)) * light[..., None]
    vignette = 1.0 - 0.10 * ((xs - 0.5) ** 2 + (ys - 0.5) ** 2) / 0.5
    image *= vignette[..., None]
    return np.clip(image, 0, 255, out=image)


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


# Each drawing with its shadow's colour and opacity, by scene name.
_DRAWINGS: dict[str, tuple[Drawing, RGB, float]] = {
    "studio": (_draw_studio, (60, 62, 70), 0.45),
    "kitchen": (_draw_kitchen, (60, 38, 20), 0.5),
    "outdoor": (_draw_outdoor, (20, 40, 15), 0.5),
    "holiday": (_draw_holiday, (70, 60, 80), 0.4),
}


def keyed_by_scene_names(drawings: Mapping[str, tuple[Drawing, RGB, float]]) -> dict[str, Scene]:
    """The scene table, in SCENE_NAMES order; RuntimeError unless the drawings are exactly the
    listed names (and the default scene is one of them)."""
    missing = [name for name in SCENE_NAMES if name not in drawings]
    unlisted = sorted(set(drawings) - set(SCENE_NAMES))
    if missing or unlisted or DEFAULT_SCENE not in SCENE_NAMES:
        raise RuntimeError(
            f"compositor scenes disagree with SCENE_NAMES: no drawing for {missing}, "
            f"drawings not listed {unlisted}, default scene {DEFAULT_SCENE!r}"
        )
    return {name: Scene(name, *drawings[name]) for name in SCENE_NAMES}


SCENES: dict[str, Scene] = keyed_by_scene_names(_DRAWINGS)
