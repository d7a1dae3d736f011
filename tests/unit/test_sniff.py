"""Magic-byte sniffing: real encoder output for raster formats, real documents for text ones."""

from __future__ import annotations

import io

import pytest
from PIL import Image, features

from processors.imaging.formats import BY_MIME, extension_for
from processors.references import sniff as s


def encode(fmt: str, mode: str = "RGB", **params: object) -> bytes:
    out = io.BytesIO()
    Image.new(mode, (8, 6), (200, 10, 10) if mode == "RGB" else 1).save(out, fmt, **params)
    return out.getvalue()


@pytest.mark.parametrize(
    ("fmt", "mime"),
    [
        ("JPEG", s.JPEG),
        ("PNG", s.PNG),
        ("GIF", s.GIF),
        ("WEBP", s.WEBP),
        ("BMP", s.BMP),
        ("TIFF", s.TIFF),
    ],
)
def test_raster_formats_from_real_encoders(fmt: str, mime: str) -> None:
    assert s.sniff(encode(fmt)) == mime
    assert s.is_raster(mime)


@pytest.mark.parametrize(
    ("fmt", "extension"),
    [("JPEG", "jpg"), ("PNG", "png"), ("GIF", "gif"), ("WEBP", "webp"), ("BMP", "bmp"), ("TIFF", "tiff")],
)
def test_what_is_sniffed_is_decoded_by_its_own_codec_and_stored_under_its_extension(
    fmt: str, extension: str
) -> None:
    """One table (processors.imaging.formats) answers sniffing, decoding and key naming alike."""
    known = BY_MIME[s.sniff(encode(fmt)) or ""]
    assert (known.pillow, known.extension, extension_for(known.mime)) == (fmt, extension, extension)


def test_big_endian_tiff() -> None:
    assert s.sniff(b"MM\x00*\x00\x00\x00\x08" + bytes(16)) == s.TIFF


def test_avif_from_real_encoder() -> None:
    # PyPI's Pillow wheels (11.3 and later, what pyproject asks for) bundle libavif.
    assert features.check("avif"), "this Pillow has no AVIF encoder: reinstall it from PyPI's wheels"
    assert s.sniff(encode("AVIF")) == s.AVIF


def ftyp(major: bytes, *compatible: bytes) -> bytes:
    body = b"ftyp" + major + b"\x00\x00\x00\x00" + b"".join(compatible)
    return (len(body) + 4).to_bytes(4, "big") + body + bytes(16)


def test_iso_bmff_brands() -> None:
    assert s.sniff(ftyp(b"avif", b"mif1", b"miaf")) == s.AVIF
    assert s.sniff(ftyp(b"heic", b"mif1")) == s.HEIC
    assert s.sniff(ftyp(b"mif1", b"avif")) == s.AVIF
    assert s.sniff(ftyp(b"mif1", b"heic")) == s.HEIC
    # An MP4 video is ISO-BMFF too, and not an image.
    assert s.sniff(ftyp(b"isom", b"iso2", b"mp41")) is None


@pytest.mark.parametrize(
    "doc",
    [
        b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>',
        b'<?xml version="1.0"?>\n<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" "x">\n<svg/>',
        b"\xef\xbb\xbf  \n<!-- made by hand --><svg></svg>",
        "\ufeff<svg></svg>".encode("utf-16-le"),
    ],
)
def test_svg(doc: bytes) -> None:
    assert s.sniff(doc) == s.SVG
    assert not s.is_raster(s.sniff(doc))


@pytest.mark.parametrize(
    "doc",
    [
        b"<!DOCTYPE html><html><body>Not found</body></html>",
        b"\n\n  <html><head><title>403</title></head></html>",
        b"<HTML><BODY><svg></svg></BODY></HTML>",  # inline SVG in a page is still a page
        b"<body>error</body>",
    ],
)
def test_html(doc: bytes) -> None:
    assert s.sniff(doc) == s.HTML


def test_other_xml() -> None:
    assert s.sniff(b'<?xml version="1.0"?><Error><Code>AccessDenied</Code></Error>') == s.XML


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff\xd8",  # too short to be JPEG
        b"BM" + bytes(30),  # "BM" without a plausible DIB header
        b"RIFF\x00\x00\x00\x00WAVEfmt ",
        b"%PDF-1.7\n",
        b"\x1f\x8b\x08\x00",  # gzip
        b"hello, world",
        b'{"error": "not found"}',
    ],
)
def test_unrecognised(data: bytes) -> None:
    assert s.sniff(data) is None
