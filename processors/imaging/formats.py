"""The raster formats Lightbox knows: MIME type, file extension and Pillow codec, in one table.

Sniffing reports MIME types, the downloader picks the one Pillow decoder a MIME type may use,
content-addressed keys and derivative names take the extension, uploads take the MIME type: all
of them read this table.
"""

from __future__ import annotations

from dataclasses import dataclass

JPEG = "image/jpeg"
PNG = "image/png"
GIF = "image/gif"
WEBP = "image/webp"
BMP = "image/bmp"
TIFF = "image/tiff"
AVIF = "image/avif"
HEIC = "image/heic"


@dataclass(frozen=True)
class RasterFormat:
    mime: str
    extension: str
    # Pillow's format name, the only decoder downloaded bytes of this type may reach (and the
    # encoder derivatives use); None: recognised by sniffing but not decodable here.
    pillow: str | None


RASTER_FORMATS: tuple[RasterFormat, ...] = (
    RasterFormat(JPEG, "jpg", "JPEG"),
    RasterFormat(PNG, "png", "PNG"),
    RasterFormat(GIF, "gif", "GIF"),
    RasterFormat(WEBP, "webp", "WEBP"),
    RasterFormat(BMP, "bmp", "BMP"),
    RasterFormat(TIFF, "tiff", "TIFF"),
    RasterFormat(AVIF, "avif", "AVIF"),
    RasterFormat(HEIC, "heic", None),
)

BY_MIME: dict[str, RasterFormat] = {f.mime: f for f in RASTER_FORMATS}
BY_PILLOW: dict[str, RasterFormat] = {f.pillow: f for f in RASTER_FORMATS if f.pillow}


def extension_for(mime: str) -> str:
    """The conventional extension of a raster MIME type ("" when it is not one)."""
    known = BY_MIME.get(mime)
    return known.extension if known else ""


def load_codecs() -> None:
    """Import every Pillow codec now. Pillow imports its plugins on first use (five on the first
    open, all the others on the first WebP save or unusual file), which lands inside the first jobs
    of each image stage; the image stages call this at start instead."""
    from PIL import Image

    Image.init()
