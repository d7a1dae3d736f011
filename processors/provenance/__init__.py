"""Content credentials: how a published file says how it was made, in a form others can check.

Two layers, written in this order (docs/provenance.md):

- xmp.py: the IPTC digital source type (and Lightbox's lineage) in the file's XMP packet,
  written by postprocess when it encodes a derivative; every XMP reader sees it.
- manifest.py, signing.py: a C2PA manifest recording the job's lineage, signed with the
  project's key by publish, after the file's last encode, so its hash covers pixels and XMP alike.
- verify.py: validates a file's manifest and reads its lineage back (`lightbox verify FILE`).
- keys.py: the local test certificate chain (`lightbox keys init`) and loading the configured one.
- source_type.py: which IPTC digital source type a job's image is.

Nothing is imported here on purpose: the c2pa library loads only where signing or verifying does.
"""
