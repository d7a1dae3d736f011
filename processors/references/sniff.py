"""Magic-byte sniffing: what the bytes are, whatever the server's Content-Type claims.

Servers mislabel constantly (HTML error pages as image/jpeg, SVG as image/png), so the declared
type is never trusted; the decoder is chosen from what this module reports.
"""

from __future__ import annotations

import re

from processors.imaging.formats import AVIF, BMP, BY_MIME, GIF, HEIC, JPEG, PNG, TIFF, WEBP

SVG = "image/svg+xml"
HTML = "text/html"
XML = "application/xml"

RASTER_TYPES = frozenset(BY_MIME)
TEXT_TYPES = frozenset({SVG, HTML, XML})

__all__ = [
    "AVIF",
    "BMP",
    "GIF",
    "HEIC",
    "HTML",
    "JPEG",
    "PNG",
    "SVG",
    "TIFF",
    "WEBP",
    "XML",
    "is_raster",
    "sniff",
]

# Valid BITMAPINFOHEADER family sizes; "BM" alone is too weak a signature.
_BMP_DIB_SIZES = frozenset({12, 16, 40, 52, 56, 64, 108, 124})
_AVIF_BRANDS = frozenset({b"avif", b"avis"})
_HEIC_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs"})
# Generic HEIF brands: AVIF or HEIC is decided by the compatible-brands list.
_HEIF_GENERIC_BRANDS = frozenset({b"mif1", b"msf1", b"miaf"})

_TEXT_HEAD_BYTES = 4096
_HTML_MARKERS = re.compile(
    r"<(!doctype\s+html|html|head|body|script|iframe|title|meta|link|div|p|a|table|style)[\s>/]"
)


def sniff(data: bytes) -> str | None:
    """The MIME type the bytes really are, or None when unrecognised."""
    return _sniff_raster(data) or _sniff_text(data)


def is_raster(mime: str | None) -> bool:
    return mime in RASTER_TYPES


def _sniff_raster(data: bytes) -> str | None:
    if data.startswith(b"\xff\xd8\xff"):
        return JPEG
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if data.startswith((b"GIF87a", b"GIF89a")):
        return GIF
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return WEBP
    if data.startswith((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")):
        return TIFF
    if _looks_like_bmp(data):
        return BMP
    return _sniff_ftyp(data)


def _looks_like_bmp(data: bytes) -> bool:
    if len(data) < 18 or not data.startswith(b"BM"):
        return False
    return int.from_bytes(data[14:18], "little") in _BMP_DIB_SIZES


def _sniff_ftyp(data: bytes) -> str | None:
    """ISO-BMFF (AVIF/HEIC): size(4) 'ftyp' major(4) minor(4) compatible brands(4 each)."""
    if len(data) < 16 or data[4:8] != b"ftyp":
        return None
    box_size = int.from_bytes(data[0:4], "big")
    major = data[8:12]
    end = min(box_size, len(data)) if box_size >= 16 else 16
    compatible = {data[i : i + 4] for i in range(16, end - 3, 4)}
    brands = {major} | compatible
    if brands & _AVIF_BRANDS:
        return AVIF
    if brands & _HEIC_BRANDS:
        return HEIC
    if major in _HEIF_GENERIC_BRANDS:
        return HEIC
    return None


def _sniff_text(data: bytes) -> str | None:
    text = _decode_head(data[:_TEXT_HEAD_BYTES])
    if text is None:
        return None
    head = text.lstrip().lower()
    if not head.startswith("<"):
        return None
    svg_at = head.find("<svg")
    html = _HTML_MARKERS.search(head)
    html_at = html.start() if html else -1
    # An HTML page with inline SVG is HTML; an SVG document is SVG: whichever opens first wins.
    if svg_at >= 0 and (html_at < 0 or svg_at < html_at):
        return SVG
    if html_at >= 0:
        return HTML
    if head.startswith(("<?xml", "<!--", "<!doctype")):
        return XML
    return None


def _decode_head(head: bytes) -> str | None:
    for bom, codec in (
        (b"\xef\xbb\xbf", "utf-8"),
        (b"\xff\xfe", "utf-16-le"),
        (b"\xfe\xff", "utf-16-be"),
    ):
        if head.startswith(bom):
            return head[len(bom) :].decode(codec, errors="ignore")
    if b"\x00" in head:
        return None
    return head.decode("utf-8", errors="ignore")
