"""Channel derivatives: sized, cropped, colour-normalised files that carry their own lineage.

Every derivative is sRGB (converted from the embedded ICC profile when there is one, and tagged
with an sRGB profile), has exactly its spec's dimensions, and embeds the job's lineage as JSON in
the file itself (PNG tEXt, XMP for JPEG and WebP, plus EXIF ImageDescription as a fallback), so an
asset that leaves the system can still say where it came from. Rendering is deterministic: the
same image, spec and lineage give the same bytes, which keeps re-runs idempotent.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal
from xml.etree import ElementTree
from xml.sax.saxutils import quoteattr

from PIL import Image, ImageCms, ImageOps, PngImagePlugin

from processors.imaging.formats import BY_PILLOW
from processors.imaging.masks import has_alpha

Fit = Literal["contain", "cover"]
Format = Literal["JPEG", "PNG", "WEBP"]

LINEAGE_KEY = "lightbox:lineage"
_XMP_NS = "https://lightbox.dev/ns/lineage/1.0/"
_EXIF_IMAGE_DESCRIPTION = 0x010E
_WHITE = (255, 255, 255)


@dataclass(frozen=True)
class DerivativeSpec:
    name: str
    width: int
    height: int
    fit: Fit
    format: Format
    quality: int = 90


CHANNEL_DERIVATIVES: dict[str, list[DerivativeSpec]] = {
    "web": [
        DerivativeSpec("web-800", 800, 800, "contain", "JPEG", 88),
        DerivativeSpec("web-thumb-400", 400, 400, "cover", "WEBP", 82),
    ],
    # Marketplaces want the whole product on pure white, square, at least 1000 px.
    "marketplace": [DerivativeSpec("marketplace-1000", 1000, 1000, "contain", "JPEG", 92)],
    # 4:5 portrait is the feed format that takes the most screen.
    "social": [DerivativeSpec("social-1080x1350", 1080, 1350, "cover", "JPEG", 90)],
    "default": [DerivativeSpec("master-1024", 1024, 1024, "contain", "PNG")],
}


def derivatives_for(channel: str) -> list[DerivativeSpec]:
    """The specs of ``channel``, or the default set for a channel without its own."""
    return CHANNEL_DERIVATIVES.get(channel, CHANNEL_DERIVATIVES["default"])


def derivative_name(job_id: str, spec: DerivativeSpec) -> str:
    return f"{job_id}/{spec.name}.{BY_PILLOW[spec.format].extension}"


def content_type(spec: DerivativeSpec) -> str:
    return BY_PILLOW[spec.format].mime


def render_derivative(image: Image.Image, spec: DerivativeSpec, lineage: dict[str, str]) -> bytes:
    """The encoded derivative of ``image`` for ``spec`` with ``lineage`` embedded."""
    if spec.width <= 0 or spec.height <= 0:
        raise ValueError(f"derivative {spec.name} has a non-positive size")
    keep_alpha = spec.format != "JPEG"
    normalised = to_srgb(image, keep_alpha=keep_alpha)
    fitted = _fit(normalised, spec)
    payload = lineage_json(lineage)
    buffer = io.BytesIO()
    if spec.format == "PNG":
        fitted.save(buffer, "PNG", pnginfo=_png_info(payload), icc_profile=srgb_profile_bytes())
    elif spec.format == "JPEG":
        fitted.save(
            buffer,
            "JPEG",
            quality=spec.quality,
            subsampling="4:2:0",
            optimize=False,
            progressive=False,
            icc_profile=srgb_profile_bytes(),
            xmp=_xmp_packet(payload),
            exif=_exif(payload),
        )
    elif spec.format == "WEBP":
        fitted.save(
            buffer,
            "WEBP",
            quality=spec.quality,
            method=4,
            icc_profile=srgb_profile_bytes(),
            xmp=_xmp_packet(payload),
            exif=_exif(payload),
        )
    else:
        raise ValueError(f"unsupported derivative format {spec.format!r}")
    return buffer.getvalue()


def read_lineage(data: bytes) -> dict[str, str]:
    """The lineage embedded by render_derivative, or {} when the file carries none."""
    with Image.open(io.BytesIO(data)) as image:
        for raw in (_from_png_text(image), _from_xmp(image), _from_exif(image)):
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


def _fit(image: Image.Image, spec: DerivativeSpec) -> Image.Image:
    size = (spec.width, spec.height)
    if spec.fit == "cover":
        return ImageOps.fit(image, size, Image.Resampling.LANCZOS, centering=(0.5, 0.5))
    scale = min(spec.width / image.width, spec.height / image.height)
    inner = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    resized = image.resize(inner, Image.Resampling.LANCZOS)
    # White padding for opaque images; transparent padding keeps cut-outs cut out.
    pad = (255, 255, 255, 0) if image.mode == "RGBA" else _WHITE
    canvas = Image.new(image.mode, size, pad)
    canvas.paste(resized, ((spec.width - inner[0]) // 2, (spec.height - inner[1]) // 2))
    return canvas


# --- lineage metadata ------------------------------------------------------------------------


def _png_info(payload: str) -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    info.add_text(LINEAGE_KEY, payload)
    return info


def _xmp_packet(payload: str) -> bytes:
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">'
        '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        f'<rdf:Description rdf:about="" xmlns:lightbox="{_XMP_NS}" '
        f"lightbox:lineage={quoteattr(payload)}/>"
        "</rdf:RDF></x:xmpmeta>"
        '<?xpacket end="r"?>'
    ).encode()


def _exif(payload: str) -> bytes:
    exif = Image.Exif()
    exif[_EXIF_IMAGE_DESCRIPTION] = f"{LINEAGE_KEY}={payload}"
    return exif.tobytes()


def _from_png_text(image: Image.Image) -> str | None:
    text = getattr(image, "text", None)
    if isinstance(text, dict) and LINEAGE_KEY in text:
        return str(text[LINEAGE_KEY])
    return None


def _from_xmp(image: Image.Image) -> str | None:
    raw = image.info.get("xmp")
    if not raw:
        return None
    xml = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    # The packet wrapper's processing instructions are not part of the XML document proper.
    body = re.sub(r"<\?xpacket[^>]*\?>", "", xml).strip().lstrip("\ufeff")
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        return None
    attribute = f"{{{_XMP_NS}}}lineage"
    for element in root.iter():
        if attribute in element.attrib:
            return element.attrib[attribute]
    return None


def _from_exif(image: Image.Image) -> str | None:
    description = image.getexif().get(_EXIF_IMAGE_DESCRIPTION)
    prefix = f"{LINEAGE_KEY}="
    if isinstance(description, str) and description.startswith(prefix):
        return description[len(prefix) :]
    return None
