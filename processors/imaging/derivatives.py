"""Channel derivatives: sized, framed, colour-normalised files that carry their own lineage.

Every derivative is sRGB (converted from the embedded ICC profile when there is one, and tagged
with an sRGB profile), has exactly its spec's dimensions, and embeds in the file itself:

- XMP (JPEG, WebP, and PNG as an iTXt chunk): the IPTC digital source type, the job's lineage as
  JSON and, when the channel has rules, their verdicts (processors/provenance/xmp.py);
- PNG tEXt and EXIF ImageDescription: the lineage again, for tools that drop XMP.

Framing (``fit``) keeps the product in the frame when its mask is known: ``contain`` shows the
whole image, padded; ``cover`` fills the frame and moves the crop window (or, if the product
cannot fit at that scale, zooms out) so the product and a margin stay inside; ``product`` cuts
the product out along its mask and places it on a plain background at ``fill`` of the frame.
The product mask goes through the same geometry, so the caller learns where the product is in
the derivative (what the channel rules measure).

Rendering is deterministic: the same image, spec, mask and metadata give the same bytes, which
keeps re-runs idempotent. Which derivatives a channel gets is processors/channels/'s business.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from functools import lru_cache

from PIL import Image, ImageChops, ImageCms, PngImagePlugin

from processors.channels.presets import load_presets
from processors.channels.spec import BACKGROUNDS, FITS, FORMATS, Background, DerivativeSpec, Fit, Format
from processors.imaging.formats import BY_PILLOW
from processors.imaging.framing import mask_box
from processors.imaging.masks import compute_mask, has_alpha
from processors.provenance.xmp import XmpFields, read_xmp, xmp_packet

LINEAGE_KEY = "lightbox:lineage"
_XMP_PNG_KEY = "XML:com.adobe.xmp"
_EXIF_IMAGE_DESCRIPTION = 0x010E
_WHITE = (255, 255, 255)


@dataclass(frozen=True)
class Rendered:
    data: bytes
    # "L" at the spec's size, 255 where the product is; None when no mask was given or found.
    product_mask: Image.Image | None


@dataclass(frozen=True)
class Metadata:
    """What a derivative carries about itself."""

    lineage: dict[str, str]
    digital_source_type: str = ""  # the IPTC NewsCodes URI; empty: not declared
    channel_checks: str = ""  # JSON of the channel rule verdicts; empty: none


__all__ = [
    "BACKGROUNDS",
    "CHANNEL_DERIVATIVES",
    "FITS",
    "FORMATS",
    "LINEAGE_KEY",
    "Background",
    "DerivativeSpec",
    "Fit",
    "Format",
    "Metadata",
    "Rendered",
    "content_type",
    "derivative_name",
    "derivatives_for",
    "encode",
    "frame",
    "lineage_json",
    "read_lineage",
    "render",
    "render_derivative",
    "srgb_profile_bytes",
    "to_srgb",
]

# The packaged presets' derivative specs by channel. The presets are processors/channels/'s
# (presets.yaml); these names stay for the callers that predate it.
CHANNEL_DERIVATIVES: dict[str, list[DerivativeSpec]] = {
    channel: [preset.spec for preset in presets] for channel, presets in load_presets().channels.items()
}


def derivatives_for(channel: str) -> list[DerivativeSpec]:
    """The packaged specs of ``channel``, or the default set for a channel without its own."""
    return load_presets().specs(channel)


def derivative_name(job_id: str, spec: DerivativeSpec) -> str:
    return f"{job_id}/{spec.name}.{BY_PILLOW[spec.format].extension}"


def content_type(spec: DerivativeSpec) -> str:
    return BY_PILLOW[spec.format].mime


def render_derivative(image: Image.Image, spec: DerivativeSpec, lineage: dict[str, str]) -> bytes:
    """The encoded derivative of ``image`` for ``spec`` with ``lineage`` embedded."""
    return render(image, spec, Metadata(lineage)).data


def render(
    image: Image.Image,
    spec: DerivativeSpec,
    metadata: Metadata,
    product_mask: Image.Image | None = None,
) -> Rendered:
    """The derivative of ``image`` (whose product is ``product_mask``, "L" at its size, if known)."""
    fitted, mask = frame(image, spec, product_mask)
    return Rendered(encode(fitted, spec, metadata), mask)


def frame(
    image: Image.Image, spec: DerivativeSpec, product_mask: Image.Image | None = None
) -> tuple[Image.Image, Image.Image | None]:
    """The pixels of the derivative (before encoding) and the product mask moved with them."""
    if spec.width <= 0 or spec.height <= 0:
        raise ValueError(f"derivative {spec.name} has a non-positive size")
    if product_mask is not None and product_mask.size != image.size:
        raise ValueError(f"product mask is {product_mask.size}, image is {image.size}")
    keep_alpha = spec.format != "JPEG" and spec.background == "auto"
    normalised = to_srgb(image, keep_alpha=keep_alpha)
    mask = product_mask.convert("L") if product_mask is not None else None
    if spec.fit == "product" and mask is None:
        mask = compute_mask(normalised)
    return _fit(normalised, mask, spec)


def encode(pixels: Image.Image, spec: DerivativeSpec, metadata: Metadata) -> bytes:
    """``pixels`` (already framed) encoded for ``spec`` with ``metadata`` embedded.

    The encoders are deterministic, so encoding the same pixels with other metadata gives the
    same compressed image data: postprocess checks a derivative, then encodes it again with the
    verdicts in its XMP, and the pixels a reader decodes are the ones that were checked.
    """
    payload = lineage_json(metadata.lineage)
    xmp = xmp_packet(XmpFields(metadata.digital_source_type, payload, metadata.channel_checks))
    buffer = io.BytesIO()
    if spec.format == "PNG":
        pixels.save(buffer, "PNG", pnginfo=_png_info(payload, xmp), icc_profile=srgb_profile_bytes())
    elif spec.format == "JPEG":
        pixels.save(
            buffer,
            "JPEG",
            quality=spec.quality,
            subsampling="4:2:0",
            optimize=False,
            progressive=False,
            icc_profile=srgb_profile_bytes(),
            xmp=xmp,
            exif=_exif(payload),
        )
    elif spec.format == "WEBP":
        pixels.save(
            buffer,
            "WEBP",
            quality=spec.quality,
            method=4,
            icc_profile=srgb_profile_bytes(),
            xmp=xmp,
            exif=_exif(payload),
        )
    else:
        raise ValueError(f"unsupported derivative format {spec.format!r}")
    return buffer.getvalue()


def read_lineage(data: bytes) -> dict[str, str]:
    """The lineage embedded by render_derivative, or {} when the file carries none."""
    with Image.open(io.BytesIO(data)) as image:
        raws = (_from_png_text(image), read_xmp(data).lineage_json or None, _from_exif(image))
    for raw in raws:
        if raw:
            parsed = json.loads(raw)
            return {str(k): str(v) for k, v in parsed.items()}
    return {}


def lineage_json(lineage: dict[str, str]) -> str:
    # Sorted and ASCII-only: deterministic bytes, and safe in PNG tEXt (Latin-1) and EXIF (ASCII).
    return json.dumps(
        {str(k): str(v) for k, v in lineage.items()},
        sort_keys=True,
        ensure_ascii=True,
        separators=(",", ":"),
    )


# --- colour ----------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def srgb_profile_bytes() -> bytes:
    """An sRGB ICC profile with a fixed creation date.

    LittleCMS stamps the current time into the header, which would make every render differ
    byte-wise; the date is irrelevant to colour, so it is pinned.
    """
    profile = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    profile[24:36] = bytes([0x07, 0xE8, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0])  # 2024-01-01 00:00:00
    return bytes(profile)


@lru_cache(maxsize=1)
def _srgb_profile() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(io.BytesIO(srgb_profile_bytes()))


def to_srgb(image: Image.Image, keep_alpha: bool) -> Image.Image:
    """RGB (or RGBA when ``keep_alpha`` and the image has transparency) in sRGB.

    Pixels are converted from the embedded ICC profile when there is one; untagged images are
    assumed to be sRGB already, as browsers do. Transparency is flattened on white when the
    target cannot hold it, which is what marketplaces expect of a product on a plain backdrop.
    """
    transparent = has_alpha(image)
    icc = image.info.get("icc_profile")
    if transparent:
        working = image.convert("RGBA")
    elif image.mode in ("RGB", "CMYK", "L", "LAB"):
        working = image
    else:
        working = image.convert("RGB")
    if icc:
        working = _convert_profile(working, icc)
    if working.mode not in ("RGB", "RGBA"):
        working = working.convert("RGBA" if transparent else "RGB")
    if working.mode == "RGBA" and not keep_alpha:
        matte = Image.new("RGB", working.size, _WHITE)
        matte.paste(working, (0, 0), working)
        return matte
    return working


def _convert_profile(image: Image.Image, icc: bytes) -> Image.Image:
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    except (OSError, ImageCms.PyCMSError):
        # A broken profile must not block publishing: treat the pixels as sRGB, as viewers do.
        return image
    output_mode = "RGBA" if image.mode == "RGBA" else "RGB"
    try:
        return ImageCms.profileToProfile(
            image,
            source,
            _srgb_profile(),
            renderingIntent=ImageCms.Intent.PERCEPTUAL,
            outputMode=output_mode,
        )
    except ImageCms.PyCMSError:
        # Profile and pixel mode disagree (e.g. a CMYK profile on RGB data): ignore the profile.
        return image


# --- geometry --------------------------------------------------------------------------------
# Every fit is one scale and one offset (output = source * scale + offset): the image is resized
# once, over the part of it that lands in the frame, and the rest of the frame is background.

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class _Geometry:
    scale: float
    x: float  # where the source's top-left lands in the output
    y: float


def _fit(
    image: Image.Image, mask: Image.Image | None, spec: DerivativeSpec
) -> tuple[Image.Image, Image.Image | None]:
    box = mask_box(mask) if mask is not None else None
    if spec.fit == "product" and mask is not None and box is not None:
        return _product_fit(image, mask, box, spec)
    # contain, and a product fit whose mask is empty: the whole image
    geometry = _cover(image.size, box, spec) if spec.fit == "cover" else _contain(image.size, spec)
    pad = (255, 255, 255, 0) if image.mode == "RGBA" else _WHITE
    fitted = _place(image, geometry, spec, Image.new(image.mode, (spec.width, spec.height), pad))
    # The mask is measured, never shown: bilinear is exact enough for where the product is.
    placed_mask = (
        None
        if mask is None
        else _place(mask, geometry, spec, Image.new("L", fitted.size, 0), Image.Resampling.BILINEAR)
    )
    return fitted, placed_mask


def _contain(size: tuple[int, int], spec: DerivativeSpec) -> _Geometry:
    scale = min(spec.width / size[0], spec.height / size[1])
    return _Geometry(scale, (spec.width - size[0] * scale) / 2, (spec.height - size[1] * scale) / 2)


def _cover(size: tuple[int, int], box: Box | None, spec: DerivativeSpec) -> _Geometry:
    """Fill the frame; with a product box, keep it (and the margin) inside the frame."""
    scale = max(spec.width / size[0], spec.height / size[1])
    margin = spec.margin * min(spec.width, spec.height)
    if box is not None:
        room_w, room_h = max(1.0, spec.width - 2 * margin), max(1.0, spec.height - 2 * margin)
        # Zoom out only as far as the product needs: the frame may then show some padding.
        scale = min(scale, room_w / max(1, box[2] - box[0]), room_h / max(1, box[3] - box[1]))
    x = _axis_offset(size[0], spec.width, scale, None if box is None else (box[0], box[2]), margin)
    y = _axis_offset(size[1], spec.height, scale, None if box is None else (box[1], box[3]), margin)
    return _Geometry(scale, x, y)


def _axis_offset(
    source: int, frame: int, scale: float, product: tuple[int, int] | None, margin: float
) -> float:
    """Offset along one axis: centred, moved just enough to keep the product span in frame, and
    never uncovering more of the frame than needed when the image is larger than it."""
    scaled = source * scale
    offset = (frame - scaled) / 2
    if product is not None:
        low, high = product[0] * scale + offset, product[1] * scale + offset
        if low < margin:
            offset += margin - low
        elif high > frame - margin:
            offset -= high - (frame - margin)
    if scaled >= frame:
        offset = min(0.0, max(frame - scaled, offset))  # no background where the image reaches
    return offset


def _place(
    source: Image.Image,
    geometry: _Geometry,
    spec: DerivativeSpec,
    canvas: Image.Image,
    resample: Image.Resampling = Image.Resampling.LANCZOS,
) -> Image.Image:
    """``source`` resized by ``geometry`` onto ``canvas``, only the part that lands in frame."""
    s, ox, oy = geometry.scale, geometry.x, geometry.y
    x0, y0 = max(0, round(ox)), max(0, round(oy))
    x1 = min(spec.width, round(ox + source.width * s))
    y1 = min(spec.height, round(oy + source.height * s))
    if x1 <= x0 or y1 <= y0:
        return canvas
    region = ((x0 - ox) / s, (y0 - oy) / s, (x1 - ox) / s, (y1 - oy) / s)
    region = (
        max(0.0, region[0]),
        max(0.0, region[1]),
        min(float(source.width), region[2]),
        min(float(source.height), region[3]),
    )
    resized = source.resize((x1 - x0, y1 - y0), resample, box=region)
    canvas.paste(resized, (x0, y0))
    return canvas


def _product_fit(
    image: Image.Image, mask: Image.Image, box: Box, spec: DerivativeSpec
) -> tuple[Image.Image, Image.Image]:
    """The product alone, cut out along its mask, centred on a plain background at ``fill``."""
    rgba = image.convert("RGBA")
    # A cut-out's own transparency stays transparent whatever the mask says.
    alpha = mask if image.mode != "RGBA" else ImageChops.darker(mask, image.getchannel("A"))
    rgba.putalpha(alpha)
    cut = rgba.crop(box)
    fill = min(max(spec.fill, 0.05), 1.0)
    scale = fill * min(spec.width / cut.width, spec.height / cut.height)
    size = (max(1, round(cut.width * scale)), max(1, round(cut.height * scale)))
    # RGBA resizes premultiplied: the colours under transparent pixels do not bleed into the rim.
    resized = cut.resize(size, Image.Resampling.LANCZOS)
    offset = ((spec.width - size[0]) // 2, (spec.height - size[1]) // 2)
    keep_alpha = spec.format != "JPEG" and spec.background == "auto"
    if keep_alpha:
        canvas = Image.new("RGBA", (spec.width, spec.height), (255, 255, 255, 0))
        canvas.paste(resized, offset)
    else:
        canvas = Image.new("RGB", (spec.width, spec.height), _WHITE)
        canvas.paste(resized, offset, resized)
    placed = Image.new("L", canvas.size, 0)
    placed.paste(resized.getchannel("A"), offset)
    return canvas, placed


# --- lineage metadata ------------------------------------------------------------------------


def _png_info(payload: str, xmp: bytes) -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    info.add_text(LINEAGE_KEY, payload)
    # XMP in PNG is an uncompressed iTXt chunk with this keyword (XMP spec part 3).
    info.add_itxt(_XMP_PNG_KEY, xmp.decode("utf-8"), zip=False)
    return info


def _exif(payload: str) -> bytes:
    exif = Image.Exif()
    exif[_EXIF_IMAGE_DESCRIPTION] = f"{LINEAGE_KEY}={payload}"
    return exif.tobytes()


def _from_png_text(image: Image.Image) -> str | None:
    text = getattr(image, "text", None)
    if isinstance(text, dict) and LINEAGE_KEY in text:
        return str(text[LINEAGE_KEY])
    return None


def _from_exif(image: Image.Image) -> str | None:
    description = image.getexif().get(_EXIF_IMAGE_DESCRIPTION)
    prefix = f"{LINEAGE_KEY}="
    if isinstance(description, str) and description.startswith(prefix):
        return description[len(prefix) :]
    return None
