"""A small procedural product catalog for demos, smoke tests and benchmarks.

The images are drawn with Pillow so they need no download and no licence, yet look like what the
pipeline really receives: cut-out PNGs with transparency and JPEG packshots on a white backdrop.
Everything is deterministic, so the same catalog gives the same bytes and the same event ids.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter, ImageFont

SIZE = 512
# Drawn at twice the size and downsampled: Pillow's shapes are not antialiased.
_SUPER = 2
_WHITE = (255, 255, 255)
# Fixed namespace so event ids are stable across runs and machines.
_EVENT_NAMESPACE = uuid.UUID("6f1d2f5e-3c1a-5b7e-9a53-0c1e8b7d4a21")

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class SampleProduct:
    sku: str
    title: str
    brand: str
    category: str
    attributes: dict[str, str] = field(default_factory=dict)
    filename: str = ""


def make_sample_products(out_dir: Path) -> list[SampleProduct]:
    """Draw the sample products into ``out_dir`` (created if needed) and describe them."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    products = []
    for spec in _SPECS:
        image = spec.draw()
        path = out_dir / spec.product.filename
        if spec.product.filename.endswith(".png"):
            image.save(path, "PNG", optimize=False)
        else:
            _on_white(image).save(path, "JPEG", quality=92)
        products.append(spec.product)
    return products


def catalog_events(
    products: Iterable[SampleProduct],
    base_url: str,
    *,
    source: str = "lightbox-sample-catalog",
    asset_types: Sequence[str] = ("hero",),
    channels: Sequence[str] = ("web",),
    locales: Sequence[str] = ("en-US",),
    template_id: str = "studio-hero",
    width: int = 512,
    height: int = 512,
    variants: int = 1,
    occurred_at_ms: int | None = None,
    salt: str = "",
) -> list[dict[str, object]]:
    """ASSET_REQUEST events (catalog_event v2 dicts) asking for assets of each product.

    ``event_id`` is a uuid5 of the product and the request, so re-sending the same catalog is
    de-duplicated by intake; pass a different ``salt`` to make a fresh run.
    """
    base = base_url.rstrip("/")
    occurred = int(time.time() * 1000) if occurred_at_ms is None else int(occurred_at_ms)
    request = {
        "asset_types": list(asset_types),
        "channels": list(channels),
        "locales": list(locales),
        "template_id": template_id,
        "width": int(width),
        "height": int(height),
        "text_overlay": None,
        "risk": "STANDARD",
        "confidential": False,
        "priority": 0,
        "variants": int(variants),
        "template_version": None,
    }
    events: list[dict[str, object]] = []
    for product in products:
        identity = json.dumps([salt, source, product.sku, request], sort_keys=True)
        events.append(
            {
                "event_id": str(uuid.uuid5(_EVENT_NAMESPACE, identity)),
                "event_type": "ASSET_REQUEST",
                "occurred_at": occurred,
                "source": source,
                "product": {
                    "sku": product.sku,
                    "title": product.title,
                    "brand": product.brand,
                    "category": product.category,
                    "attributes": dict(product.attributes),
                },
                "references": [{"url": f"{base}/{product.filename}", "role": "PRODUCT", "required": True}],
                # Own lists per event: callers mutate events (tests, demos) independently.
                "request": {k: list(v) if isinstance(v, list) else v for k, v in request.items()},
                "campaign": None,
            }
        )
    return events


# --- drawing helpers -------------------------------------------------------------------------


def _canvas() -> Image.Image:
    return Image.new("RGBA", (SIZE * _SUPER, SIZE * _SUPER), (0, 0, 0, 0))


def _s(*values: float) -> list[float]:
    """Scale design coordinates (a 512 px frame) to the supersampled canvas."""
    return [v * _SUPER for v in values]


def _finish(canvas: Image.Image) -> Image.Image:
    return canvas.resize((SIZE, SIZE), Image.Resampling.LANCZOS)


def _on_white(image: Image.Image) -> Image.Image:
    background = Image.new("RGB", image.size, _WHITE)
    background.paste(image, (0, 0), image)
    return background


def _shape(draw: Callable[[ImageDraw.ImageDraw], object], soften: float = 0.0) -> Image.Image:
    """A drawn mask; ``soften`` rounds polygon corners (blur then re-threshold), in 512 px units."""
    mask = Image.new("L", (SIZE * _SUPER, SIZE * _SUPER), 0)
    draw(ImageDraw.Draw(mask))
    if soften > 0:
        mask = mask.filter(ImageFilter.GaussianBlur(soften * _SUPER)).point(lambda v: 255 if v >= 128 else 0)
    return mask


def _paint(canvas: Image.Image, mask: Image.Image, fill: RGB | Image.Image) -> None:
    if isinstance(fill, Image.Image):
        canvas.paste(fill, (0, 0), mask)
    else:
        canvas.paste((*fill, 255), (0, 0, *canvas.size), mask)


def _cylinder(base: RGB, x0: float, x1: float, highlight: float = 0.3, shine: float = 0.45) -> Image.Image:
    """A horizontally shaded fill: dark edges, lit body, a specular strip; reads as round."""
    width = SIZE * _SUPER
    row = Image.new("RGBA", (width, 1))
    pixels = []
    for x in range(width):
        t = min(max((x - x0 * _SUPER) / max(1.0, (x1 - x0) * _SUPER), 0.0), 1.0)
        light = 0.55 + 0.55 * math.sin(math.pi * t) ** 0.7
        spec = shine * math.exp(-(((t - highlight) / 0.05) ** 2))
        pixels.append((*(min(255, int(c * light + 255 * spec)) for c in base), 255))
    row.putdata(pixels)
    return row.resize((width, width), Image.Resampling.NEAREST)


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size * _SUPER)


def _text(canvas: Image.Image, centre: tuple[float, float], text: str, size: int, fill: RGB) -> None:
    draw = ImageDraw.Draw(canvas)
    draw.text(tuple(_s(*centre)), text, font=_font(size), fill=fill, anchor="mm")


# --- the products ----------------------------------------------------------------------------


def _draw_mug() -> Image.Image:
    canvas = _canvas()
    teal = (30, 128, 140)
    handle = _shape(lambda d: d.ellipse(_s(300, 200, 440, 360), fill=255))
    hole = _shape(lambda d: d.ellipse(_s(336, 236, 404, 324), fill=255))
    handle.paste(0, (0, 0), hole)
    _paint(canvas, handle, (24, 104, 114))
    body = _shape(lambda d: d.rounded_rectangle(_s(128, 150, 360, 430), radius=36 * _SUPER, fill=255))
    _paint(canvas, body, _cylinder(teal, 128, 360))
    rim = _shape(lambda d: d.ellipse(_s(128, 132, 360, 168), fill=255))
    _paint(canvas, rim, (40, 150, 162))
    inside = _shape(lambda d: d.ellipse(_s(140, 138, 348, 162), fill=255))
    _paint(canvas, inside, (70, 46, 30))  # coffee
    band = _shape(lambda d: d.rectangle(_s(128, 300, 360, 318), fill=255))
    band.paste(0, (0, 0), Image.eval(body, lambda v: 255 - v))
    _paint(canvas, band, (236, 230, 214))
    _text(canvas, (236, 240), "N", 54, (236, 230, 214))
    return _finish(canvas)


def _draw_sneaker() -> Image.Image:
    canvas = _canvas()
    coral, sole, gum = (222, 72, 60), (214, 214, 220), (150, 98, 58)
    upper = [
        (78, 330),
        (84, 250),
        (104, 214),
        (150, 200),
        (210, 214),
        (250, 196),
        (276, 160),
        (306, 168),
        (310, 206),
        (370, 240),
        (430, 272),
        (458, 306),
        (460, 334),
    ]
    upper_mask = _shape(lambda d: d.polygon(_s(*[c for p in upper for c in p]), fill=255), 8)
    _paint(canvas, upper_mask, coral)
    toe = _shape(lambda d: d.ellipse(_s(380, 262, 470, 340), fill=255))
    toe.paste(0, (0, 0), Image.eval(upper_mask, lambda v: 255 - v))
    _paint(canvas, toe, (240, 120, 104))
    stripe = [(150, 320), (250, 250), (360, 262), (380, 280), (260, 300), (170, 330)]
    _paint(
        canvas,
        _shape(lambda d: d.polygon(_s(*[c for p in stripe for c in p]), fill=255), 4),
        (248, 244, 236),
    )
    heel = _shape(lambda d: d.rounded_rectangle(_s(74, 230, 112, 330), radius=12 * _SUPER, fill=255))
    _paint(canvas, heel, (52, 52, 60))
    sole_mask = _shape(lambda d: d.rounded_rectangle(_s(62, 326, 470, 372), radius=20 * _SUPER, fill=255))
    _paint(canvas, sole_mask, sole)
    tread = _shape(lambda d: d.rounded_rectangle(_s(66, 360, 466, 378), radius=9 * _SUPER, fill=255))
    _paint(canvas, tread, gum)
    draw = ImageDraw.Draw(canvas)
    for i in range(5):
        x, y = 262 + i * 20, 200 + i * 12
        draw.line(_s(x - 14, y + 14, x + 14, y - 8), fill=(250, 250, 250), width=5 * _SUPER)
        draw.ellipse(_s(x - 18, y + 10, x - 10, y + 18), fill=(40, 40, 48))
    return _finish(canvas)


def _draw_bottle() -> Image.Image:
    canvas = _canvas()
    navy = (34, 64, 128)
    body = _shape(
        lambda d: (
            d.rounded_rectangle(_s(186, 168, 326, 470), radius=34 * _SUPER, fill=255),
            d.polygon(_s(196, 190, 226, 118, 286, 118, 316, 190), fill=255),
        )
    )
    _paint(canvas, body, _cylinder(navy, 186, 326, highlight=0.28))
    neck = _shape(lambda d: d.rectangle(_s(226, 96, 286, 124), fill=255))
    _paint(canvas, neck, _cylinder((180, 184, 190), 226, 286))
    cap = _shape(lambda d: d.rounded_rectangle(_s(214, 40, 298, 100), radius=12 * _SUPER, fill=255))
    _paint(canvas, cap, _cylinder((44, 44, 50), 214, 298))
    loop = _shape(lambda d: d.ellipse(_s(236, 22, 276, 56), outline=255, width=8 * _SUPER))
    _paint(canvas, loop, (44, 44, 50))
    label = _shape(lambda d: d.rectangle(_s(186, 270, 326, 370), fill=255))
    label.paste(0, (0, 0), Image.eval(body, lambda v: 255 - v))
    _paint(canvas, label, _cylinder((238, 236, 228), 186, 326))
    _text(canvas, (256, 306), "CASCADE", 22, (34, 64, 128))
    _text(canvas, (256, 338), "750 ml", 16, (90, 96, 110))
    return _finish(canvas)


def _draw_lamp() -> Image.Image:
    canvas = _canvas()
    brass = (186, 142, 62)
    base = _shape(lambda d: d.ellipse(_s(160, 426, 352, 476), fill=255))
    _paint(canvas, base, _cylinder(brass, 160, 352))
    stem = _shape(lambda d: d.rectangle(_s(248, 232, 264, 448), fill=255))
    _paint(canvas, stem, _cylinder(brass, 248, 264))
    shade = _shape(lambda d: d.polygon(_s(190, 90, 322, 90, 380, 246, 132, 246), fill=255))
    _paint(canvas, shade, _cylinder((226, 210, 172), 132, 380, highlight=0.35, shine=0.12))
    trim = _shape(lambda d: d.rectangle(_s(132, 238, 380, 250), fill=255))
    trim.paste(0, (0, 0), Image.eval(shade, lambda v: 255 - v))
    _paint(canvas, trim, (150, 110, 48))
    bulb = _shape(lambda d: d.ellipse(_s(232, 236, 280, 268), fill=255))
    _paint(canvas, bulb, (255, 226, 150))
    knob = _shape(lambda d: d.ellipse(_s(248, 380, 264, 396), fill=255))
    _paint(canvas, knob, (110, 84, 40))
    return _finish(canvas)


def _draw_backpack() -> Image.Image:
    canvas = _canvas()
    olive, dark = (98, 112, 66), (52, 58, 40)
    straps = _shape(
        lambda d: (
            d.rounded_rectangle(_s(130, 150, 160, 430), radius=12 * _SUPER, fill=255),
            d.rounded_rectangle(_s(352, 150, 382, 430), radius=12 * _SUPER, fill=255),
        )
    )
    _paint(canvas, straps, dark)
    body = _shape(lambda d: d.rounded_rectangle(_s(150, 110, 362, 470), radius=46 * _SUPER, fill=255))
    _paint(canvas, body, _cylinder(olive, 150, 362, highlight=0.32))
    roll = _shape(lambda d: d.rounded_rectangle(_s(156, 80, 356, 140), radius=24 * _SUPER, fill=255))
    _paint(canvas, roll, _cylinder((84, 96, 56), 156, 356))
    buckle = _shape(lambda d: d.rounded_rectangle(_s(236, 120, 276, 190), radius=6 * _SUPER, fill=255))
    _paint(canvas, buckle, (30, 30, 34))
    pocket = _shape(lambda d: d.rounded_rectangle(_s(180, 300, 332, 446), radius=28 * _SUPER, fill=255))
    _paint(canvas, pocket, _cylinder((82, 94, 54), 180, 332))
    draw = ImageDraw.Draw(canvas)
    draw.line(_s(196, 322, 316, 322), fill=(30, 30, 34), width=4 * _SUPER)
    draw.rectangle(_s(312, 316, 326, 334), fill=(190, 190, 196))
    patch = _shape(lambda d: d.rounded_rectangle(_s(222, 226, 290, 262), radius=6 * _SUPER, fill=255))
    _paint(canvas, patch, (196, 160, 112))
    _text(canvas, (256, 244), "TH", 20, (70, 50, 30))
    return _finish(canvas)


def _draw_watch() -> Image.Image:
    canvas = _canvas()
    leather = (112, 70, 40)
    straps = _shape(
        lambda d: (
            d.rounded_rectangle(_s(210, 24, 302, 190), radius=14 * _SUPER, fill=255),
            d.rounded_rectangle(_s(210, 322, 302, 488), radius=14 * _SUPER, fill=255),
        )
    )
    _paint(canvas, straps, _cylinder(leather, 210, 302))
    draw = ImageDraw.Draw(canvas)
    for y in (60, 100, 412, 452):
        draw.line(_s(222, y, 290, y), fill=(150, 104, 66), width=2 * _SUPER)
    crown = _shape(lambda d: d.rounded_rectangle(_s(360, 240, 386, 272), radius=4 * _SUPER, fill=255))
    _paint(canvas, crown, (170, 170, 176))
    case = _shape(lambda d: d.ellipse(_s(146, 146, 366, 366), fill=255))
    _paint(canvas, case, _cylinder((206, 206, 212), 146, 366))
    dial = _shape(lambda d: d.ellipse(_s(162, 162, 350, 350), fill=255))
    _paint(canvas, dial, (24, 34, 62))
    for hour in range(12):
        angle = math.radians(hour * 30)
        inner = 70 if hour % 3 else 60
        x0, y0 = 256 + inner * math.sin(angle), 256 - inner * math.cos(angle)
        x1, y1 = 256 + 84 * math.sin(angle), 256 - 84 * math.cos(angle)
        draw.line(_s(x0, y0, x1, y1), fill=(236, 226, 196), width=(5 if hour % 3 else 8) * _SUPER)
    for cx in (220, 292):
        draw.ellipse(_s(cx - 20, 276, cx + 20, 316), outline=(150, 160, 180), width=2 * _SUPER)
    draw.line(_s(256, 256, 216, 206), fill=(240, 240, 240), width=8 * _SUPER)
    draw.line(_s(256, 256, 318, 226), fill=(240, 240, 240), width=5 * _SUPER)
    draw.line(_s(256, 256, 256, 330), fill=(230, 70, 50), width=2 * _SUPER)
    draw.ellipse(_s(248, 248, 264, 264), fill=(200, 200, 206))
    _text(canvas, (256, 206), "MERIDIAN", 14, (236, 226, 196))
    return _finish(canvas)


@dataclass(frozen=True)
class _Spec:
    product: SampleProduct
    draw: Callable[[], Image.Image]


_SPECS: tuple[_Spec, ...] = (
    _Spec(
        SampleProduct(
            "LB-MUG-001",
            "Stoneware Coffee Mug",
            "Northfield",
            "kitchen",
            {"colour": "teal", "material": "stoneware", "capacity": "350 ml"},
            "mug.png",
        ),
        _draw_mug,
    ),
    _Spec(
        SampleProduct(
            "LB-SNK-002",
            "Trail Runner Sneaker",
            "Stride",
            "footwear",
            {"colour": "coral", "material": "mesh", "size_range": "36-46"},
            "sneaker.jpg",
        ),
        _draw_sneaker,
    ),
    _Spec(
        SampleProduct(
            "LB-BTL-003",
            "Insulated Water Bottle",
            "Cascade",
            "outdoor",
            {"colour": "navy", "material": "stainless steel", "capacity": "750 ml"},
            "bottle.png",
        ),
        _draw_bottle,
    ),
    _Spec(
        SampleProduct(
            "LB-LMP-004",
            "Brass Desk Lamp",
            "Lumen & Co",
            "home",
            {"colour": "brass", "material": "brass, linen", "bulb": "E27"},
            "lamp.jpg",
        ),
        _draw_lamp,
    ),
    _Spec(
        SampleProduct(
            "LB-BPK-005",
            "Roll-top Backpack",
            "Trailhead",
            "bags",
            {"colour": "olive", "material": "waxed canvas", "volume": "24 l"},
            "backpack.jpg",
        ),
        _draw_backpack,
    ),
    _Spec(
        SampleProduct(
            "LB-WCH-006",
            "Classic Chronograph Watch",
            "Meridian",
            "accessories",
            {"colour": "navy dial", "material": "steel, leather", "diameter": "40 mm"},
            "watch.png",
        ),
        _draw_watch,
    ),
)
