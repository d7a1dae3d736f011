"""Signing: a C2PA manifest embedded in a finished file, with the project's key.

The file is signed as it is: c2pa inserts its manifest store (a JPEG APP11 segment, a PNG caBX
chunk, a WebP C2PA chunk) and hashes everything else, pixels and XMP included, so any later
change to the bytes fails verification. Signing is the last step a published file goes through;
nothing may re-encode it afterwards.

No thumbnail is embedded (the published file is its own picture, and c2pa's thumbnail would add
~20 KB and ~40 ms per file). No timestamp authority unless ``provenance.tsa_url`` names one.
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Mapping
from typing import Any

from processors.channels.render import parse_verdicts
from processors.config import Settings
from processors.imaging.formats import BY_PILLOW
from processors.provenance.keys import SigningMaterial, load_material, test_chain_dir
from processors.provenance.manifest import build_manifest
from processors.provenance.xmp import read_xmp
from processors.runtime.errors import PermanentError

log = logging.getLogger(__name__)

# What c2pa-python signs for the derivative formats (all three are supported by c2pa 0.38).
SIGNABLE_MIME = frozenset({"image/jpeg", "image/png", "image/webp"})
_BUILDER_SETTINGS = {"builder": {"thumbnail": {"enabled": False}}}


def derivative_mime(fmt: str) -> str:
    """The MIME type of a job.derivatives entry's ``format`` ("JPEG", or "jpeg" in older records)."""
    known = BY_PILLOW.get(str(fmt).upper())
    if known is None:
        raise SigningError(f"unknown derivative format {fmt!r}")
    return known.mime


class SigningError(PermanentError):
    """The file could not be signed (unsupported format, a certificate c2pa refuses, a damaged
    file): the job is dead-lettered with the reason, never published unsigned. Replaying the
    dead letters once the key is fixed publishes them."""


class ContentSigner:
    def __init__(self, material: SigningMaterial, *, include_prompt: bool = False, tsa_url: str = "") -> None:
        import c2pa

        self.material = material
        self.include_prompt = include_prompt
        self._c2pa = c2pa
        self._context = c2pa.Context(settings=c2pa.Settings.from_dict(_BUILDER_SETTINGS))
        info = c2pa.C2paSignerInfo(material.alg, material.chain_pem, material.key_pem, tsa_url or None)
        self._signer = c2pa.Signer.from_info(info)
        # One native signer, used from worker threads: c2pa objects are not meant for concurrent use.
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> ContentSigner | None:
        """The configured signer; None when signing is off. Raises when it is on but unusable,
        so a stage that must sign refuses to start rather than publish unsigned files."""
        provenance = settings.provenance
        if not provenance.sign:
            return None
        material = load_material(
            provenance.cert_path, provenance.key_path, provenance.alg, test_chain_dir(settings)
        )
        if material.is_test:
            log.warning("signing published files with the local TEST certificate chain %s", material.source)
        return cls(material, include_prompt=provenance.include_prompt, tsa_url=provenance.tsa_url)

    def sign(self, data: bytes, mime: str, manifest: Mapping[str, Any]) -> bytes:
        """``data`` with ``manifest`` signed and embedded."""
        if mime not in SIGNABLE_MIME:
            raise SigningError(f"cannot sign {mime}: only {', '.join(sorted(SIGNABLE_MIME))}")
        out = io.BytesIO()
        try:
            with self._lock:
                builder = self._c2pa.Builder(dict(manifest), context=self._context)
                builder.sign(self._signer, mime, io.BytesIO(data), out)
        except self._c2pa.C2paError as exc:
            raise SigningError(f"c2pa refused to sign the file: {exc}") from exc
        return out.getvalue()

    def sign_derivative(self, data: bytes, job: Mapping[str, Any], derivative: Mapping[str, Any]) -> bytes:
        """A rendered derivative (``derivative`` is its job.derivatives entry) signed with the
        job's lineage. The manifest takes the digital source type and the channel verdicts from
        the file's own XMP, which the signature then covers."""
        xmp = read_xmp(data)
        manifest = build_manifest(
            job,
            derivative,
            xmp,
            parse_verdicts(xmp.channel_checks_json),
            include_prompt=self.include_prompt,
        )
        return self.sign(data, derivative_mime(derivative["format"]), manifest)
