"""Persist first: a reference URL becomes a content-addressed object in storage, once.

An already-persisted URL costs no network: a small JSON entry (storage_keys.url_cache_key:
``<prefix>/url-cache/<sha256 of url>.json``) points at the stored object, and is trusted while it
is younger than the policy's cache TTL and the object it names still exists. The same bytes under
many URLs are stored once (content addressing); each URL gets its own cache entry.

Masks are not made here: the references stage computes the product mask for a persisted
reference (processors.imaging.masks.compute_mask) and passes its key to
``PersistedReference.to_record(mask_key=...)``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import weakref
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from minio.error import S3Error
from yarl import URL

from processors.imaging.formats import extension_for
from processors.references.fetcher import FetchedImage, ReferenceFetcher
from processors.references.url_policy import ReferenceFetchError, check_url, parse_url
from processors.storage import StoredObject, is_missing
from processors.storage_keys import REFS_PREFIX, url_cache_key

log = logging.getLogger(__name__)

# Cache entries stamped slightly in the future (clock skew between workers) still count;
# ones far in the future are treated as corrupt rather than fresh forever.
_CLOCK_SKEW_S = 300.0
# S3 caps user metadata at 2 KiB in total; URLs may be up to the policy's 2048 characters.
_MAX_METADATA_URL = 1024


class ReferenceStorage(Protocol):
    """The slice of processors.storage.ObjectStore this module uses (all synchronous)."""

    def exists(self, key: str) -> bool: ...

    def put_content_addressed(
        self,
        prefix: str,
        data: bytes,
        content_type: str,
        extension: str = "",
        metadata: dict[str, str] | None = None,
    ) -> tuple[StoredObject, bool]: ...

    def put_bytes(
        self,
        key: str,
        data: bytes,
        content_type: str = "application/octet-stream",
        metadata: dict[str, str] | None = None,
    ) -> StoredObject: ...

    def get_bytes(self, key: str) -> bytes: ...


@dataclass(frozen=True)
class PersistedReference:
    key: str
    sha256: str
    content_type: str
    width: int
    height: int
    size_bytes: int
    from_cache: bool  # answered from the URL cache: no network request was made
    stored_new: bool  # these bytes were uploaded by this call (False: already in storage)
    role: str = ""
    url: str = ""  # for the stage's pipeline event only; never put it on the job
    # The bytes when this call downloaded them (None for a cache hit, or when persist_all was
    # told not to keep them), so a caller that needs the image (the product mask) does not
    # download what was just uploaded.
    data: bytes | None = field(default=None, repr=False, compare=False)
    required: bool = False  # as the job asked (persist_all); not part of the job's record

    def to_record(self, mask_key: str | None = None) -> dict[str, Any]:
        """The job's StoredReference record (schemas/avro/job/v1.avsc)."""
        return {
            "role": self.role,
            "key": self.key,
            "sha256": self.sha256,
            "content_type": self.content_type,
            "width": self.width,
            "height": self.height,
            "size_bytes": self.size_bytes,
            "mask_key": mask_key,
        }


@dataclass(frozen=True)
class DroppedReference:
    role: str
    required: bool
    url: str  # for the drop's pipeline event; to_record() leaves it out
    url_sha256: str
    reason: str
    detail: str
    # Extra machine-readable facts for the drop's pipeline event (e.g. a product's coverage).
    attributes: dict[str, str] = field(default_factory=dict, compare=False)

    @classmethod
    def for_url(
        cls,
        url: str,
        role: str,
        required: bool,
        reason: str,
        detail: str,
        attributes: dict[str, str] | None = None,
    ) -> DroppedReference:
        return cls(role, required, url, url_sha256(url), reason, detail, dict(attributes or {}))

    def to_record(self) -> dict[str, Any]:
        """The job's DroppedReference record: the URL itself never goes on the job."""
        return {
            "role": self.role,
            "required": self.required,
            "url_sha256": self.url_sha256,
            "reason": self.reason,
            "detail": self.detail,
        }


def url_sha256(url: str) -> str:
    return hashlib.sha256(url.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class _CacheEntry:
    sha256: str
    key: str
    content_type: str
    width: int
    height: int
    size_bytes: int
    fetched_at: datetime

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "sha256": self.sha256,
                "key": self.key,
                "content_type": self.content_type,
                "width": self.width,
                "height": self.height,
                "size_bytes": self.size_bytes,
                "fetched_at": self.fetched_at.isoformat(),
            },
            sort_keys=True,
        ).encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes) -> _CacheEntry:
        doc = json.loads(raw)
        fetched_at = datetime.fromisoformat(str(doc["fetched_at"]))
        if fetched_at.tzinfo is None:
            raise ValueError("fetched_at has no timezone")
        return cls(
            sha256=str(doc["sha256"]),
            key=str(doc["key"]),
            content_type=str(doc["content_type"]),
            width=int(doc["width"]),
            height=int(doc["height"]),
            size_bytes=int(doc["size_bytes"]),
            fetched_at=fetched_at,
        )


class ReferencePersister:
    """Turns reference URLs into stored objects. One per event loop; share it across jobs."""

    def __init__(
        self, store: ReferenceStorage, fetcher: ReferenceFetcher, *, prefix: str = REFS_PREFIX
    ) -> None:
        self._store = store
        self._fetcher = fetcher
        self._prefix = prefix.rstrip("/")
        # Same URL twice at once: the second waits and is answered from the cache. Same bytes
        # twice at once: one upload, and stored_new is true for exactly one of them.
        self._url_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._digest_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def cache_key(self, url: str) -> str:
        return url_cache_key(url_sha256(url), self._prefix)

    async def persist(self, url: str, role: str) -> PersistedReference:
        """Stored reference for the URL; raises ReferenceFetchError when it cannot be had."""
        # Syntax-level refusals (scheme, credentials, length) cost no storage round trip.
        parse_url(url, self._fetcher.policy)
        async with lock_for(self._url_locks, url):
            cached = await self._from_cache(url, role)
            if cached is not None:
                return cached
            image = await self._fetcher.fetch(url)
            stored, created = await self._store_image(url, image)
            entry = _CacheEntry(
                sha256=image.sha256,
                key=stored.key,
                content_type=image.content_type,
                width=image.width,
                height=image.height,
                size_bytes=image.size_bytes,
                fetched_at=datetime.now(UTC),
            )
            await asyncio.to_thread(
                self._store.put_bytes, self.cache_key(url), entry.to_json(), "application/json"
            )
            return _persisted(entry, role, url, from_cache=False, stored_new=created, data=image.data)

    async def persist_all(
        self,
        refs: Sequence[tuple[str, str, bool]],
        *,
        keep_bytes_for: Collection[str] | None = None,
    ) -> tuple[list[PersistedReference], list[DroppedReference]]:
        """(url, role, required) each, concurrently (the fetcher caps downloads in flight). A
        reference that cannot be fetched or decoded becomes a DroppedReference (the caller fails
        the job when a required one drops); storage failures are not the reference's fault and
        propagate. ``keep_bytes_for``: the roles whose downloaded bytes the caller still needs
        (None: every role); the others' bytes are released as soon as they are stored."""
        tasks = [
            asyncio.create_task(self._persist_or_drop(url, role, required, keep_bytes_for))
            for url, role, required in refs
        ]
        try:
            outcomes = await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        persisted = [o for o in outcomes if isinstance(o, PersistedReference)]
        dropped = [o for o in outcomes if isinstance(o, DroppedReference)]
        return persisted, dropped

    async def _persist_or_drop(
        self, url: str, role: str, required: bool, keep_bytes_for: Collection[str] | None
    ) -> PersistedReference | DroppedReference:
        try:
            persisted = await self.persist(url, role)
        except ReferenceFetchError as exc:
            log.info("reference dropped: role=%s required=%s reason=%s", role, required, exc.reason)
            return DroppedReference.for_url(url, role, required, exc.reason, exc.detail)
        keep = keep_bytes_for is None or role in keep_bytes_for
        return replace(persisted, required=required, data=persisted.data if keep else None)

    async def _from_cache(self, url: str, role: str) -> PersistedReference | None:
        entry = await self._read_cache(url)
        if entry is None:
            return None
        age = (datetime.now(UTC) - entry.fetched_at).total_seconds()
        if not -_CLOCK_SKEW_S <= age < self._fetcher.policy.cache_ttl_s:
            return None
        # The entry is only a pointer: if the object was deleted (lifecycle rule, manual
        # cleanup) fetch again rather than hand on a dangling key.
        if not await asyncio.to_thread(self._store.exists, entry.key):
            return None
        # The entry may have been written while the URL was allowed (an older allowlist, or
        # another pipeline sharing the bucket with another policy): answer from it only if this
        # fetcher's policy admits the URL now, with the same check (and resolver) a fetch uses.
        # That costs a DNS lookup, never an HTTP request. A refusal raises, as a fetch would.
        await check_url(url, self._fetcher.policy, self._fetcher.resolver)
        return _persisted(entry, role, url, from_cache=True, stored_new=False)

    async def _read_cache(self, url: str) -> _CacheEntry | None:
        key = self.cache_key(url)
        try:
            raw = await asyncio.to_thread(self._store.get_bytes, key)
        except S3Error as exc:
            if is_missing(exc):
                return None
            raise
        try:
            return _CacheEntry.from_json(raw)
        except (ValueError, KeyError, TypeError) as exc:
            # Rewritten by the next successful fetch; never worth failing a job over.
            log.warning("ignoring unreadable url-cache entry %s: %s", key, exc)
            return None

    async def _store_image(self, url: str, image: FetchedImage) -> tuple[StoredObject, bool]:
        # The sniffed type is stored as the object's own Content-Type (the content_type
        # argument). Repeating it as "content-type" metadata makes the minio SDK send the header
        # twice and MinIO rejects the upload with SignatureDoesNotMatch.
        metadata = {"source-url": _metadata_url(url)}
        async with lock_for(self._digest_locks, image.sha256):
            return await asyncio.to_thread(
                self._store.put_content_addressed,
                self._prefix,
                image.data,
                image.content_type,
                extension_for(image.content_type),
                metadata,
            )


def _persisted(
    entry: _CacheEntry, role: str, url: str, *, from_cache: bool, stored_new: bool, data: bytes | None = None
) -> PersistedReference:
    return PersistedReference(
        key=entry.key,
        sha256=entry.sha256,
        content_type=entry.content_type,
        width=entry.width,
        height=entry.height,
        size_bytes=entry.size_bytes,
        from_cache=from_cache,
        stored_new=stored_new,
        role=role,
        url=url,
        data=data,
    )


def lock_for(table: weakref.WeakValueDictionary[str, asyncio.Lock], key: str) -> asyncio.Lock:
    """The lock for ``key`` in a table that forgets locks nobody holds or waits for."""
    lock = table.get(key)
    if lock is None:
        lock = asyncio.Lock()
        table[key] = lock
    return lock


def _metadata_url(url: str) -> str:
    """S3 metadata is ASCII header text of bounded size: the encoded URL, truncated."""
    try:
        encoded = str(URL(url))
    except ValueError:
        encoded = url.encode("ascii", "backslashreplace").decode("ascii")
    return encoded[:_MAX_METADATA_URL]
