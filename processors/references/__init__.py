"""Reference images, persist first: hardened download, proof by decoding, content-addressed
storage. The references stage calls ReferencePersister.persist_all and decides what a dropped
required reference means for the job. Sniffing lives in processors.references.sniff (the module
is not shadowed here by its sniff() function on purpose)."""

from processors.references.fetcher import FetchedImage, ReferenceFetcher, inspect_image
from processors.references.persist import (
    DroppedReference,
    PersistedReference,
    ReferencePersister,
    url_sha256,
)
from processors.references.url_policy import (
    FetchPolicy,
    Reason,
    ReferenceFetchError,
    ResolvedTarget,
    check_url,
)

__all__ = [
    "DroppedReference",
    "FetchPolicy",
    "FetchedImage",
    "PersistedReference",
    "Reason",
    "ReferenceFetchError",
    "ReferenceFetcher",
    "ReferencePersister",
    "ResolvedTarget",
    "check_url",
    "inspect_image",
    "url_sha256",
]
