"""The XMP packet every derivative carries: the IPTC digital source type and Lightbox's lineage.

One ``rdf:Description`` with simple properties as attributes, which is what every XMP reader
(exiftool, Adobe's XMP toolkit, browsers' metadata panels) reads:

- ``Iptc4xmpExt:DigitalSourceType``: the IPTC NewsCodes URI (source_type.py), the field the
  IPTC Photo Metadata standard and the EU AI Act marking guidance point readers at;
- ``lightbox:lineage``: the job's lineage as compact JSON (how to make the image again);
- ``lightbox:channelChecks``: the channel rule verdicts postprocess recorded for this file.

The packet is built deterministically (same inputs, same bytes) so a re-rendered derivative is
byte-identical, and it is written before the file is signed, so the C2PA hash covers it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from xml.etree import ElementTree
from xml.sax.saxutils import quoteattr

IPTC_EXT_NS = "http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
LIGHTBOX_NS = "https://lightbox.dev/ns/lineage/1.0/"
RDF_NS = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"

_SOURCE_TYPE = f"{{{IPTC_EXT_NS}}}DigitalSourceType"
_LINEAGE = f"{{{LIGHTBOX_NS}}}lineage"
_CHECKS = f"{{{LIGHTBOX_NS}}}channelChecks"
_PACKET_WRAPPER = re.compile(r"<\?xpacket[^>]*\?>")


@dataclass(frozen=True)
class XmpFields:
    """What a Lightbox XMP packet says; empty strings for what it does not carry."""

    digital_source_type: str = ""  # the full NewsCodes URI
    lineage_json: str = ""
    channel_checks_json: str = ""


def xmp_packet(fields: XmpFields) -> bytes:
    """The packet for ``fields`` (only the non-empty ones are written)."""
    attributes = [
        (name, value)
        for name, value in (
            ("Iptc4xmpExt:DigitalSourceType", fields.digital_source_type),
            ("lightbox:lineage", fields.lineage_json),
            ("lightbox:channelChecks", fields.channel_checks_json),
        )
        if value
    ]
    written = "".join(f" {name}={quoteattr(value)}" for name, value in attributes)
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">'
        f'<rdf:RDF xmlns:rdf="{RDF_NS}">'
        f'<rdf:Description rdf:about="" xmlns:Iptc4xmpExt="{IPTC_EXT_NS}" xmlns:lightbox="{LIGHTBOX_NS}"'
        f"{written}/>"
        "</rdf:RDF></x:xmpmeta>"
        '<?xpacket end="r"?>'
    ).encode()


def parse_xmp(raw: bytes | str | None) -> XmpFields:
    """The fields of a packet (as Pillow hands it over: bytes or str); empty when unreadable.

    Properties are read whether written as attributes (as here) or as child elements (as
    exiftool rewrites them), so a file that went through another tool still reads back.
    """
    if not raw:
        return XmpFields()
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    # The packet wrapper's processing instructions are not part of the XML document proper.
    body = _PACKET_WRAPPER.sub("", text).strip().lstrip("\ufeff").rstrip("\x00 \n")
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        return XmpFields()
    found: dict[str, str] = {}
    for element in root.iter():
        for name in (_SOURCE_TYPE, _LINEAGE, _CHECKS):
            if name in element.attrib:
                found.setdefault(name, element.attrib[name])
            elif element.tag == name and element.text:
                found.setdefault(name, element.text.strip())
    return XmpFields(
        digital_source_type=found.get(_SOURCE_TYPE, ""),
        lineage_json=found.get(_LINEAGE, ""),
        channel_checks_json=found.get(_CHECKS, ""),
    )


def read_xmp(data: bytes) -> XmpFields:
    """The Lightbox XMP fields of an encoded JPEG, PNG or WebP file (no pixels are decoded)."""
    from io import BytesIO

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(BytesIO(data)) as image:
            return parse_xmp(image.info.get("xmp"))
    except (UnidentifiedImageError, OSError, SyntaxError):
        return XmpFields()
