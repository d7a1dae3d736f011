"""Object storage (MinIO/S3) through the minio SDK: content-addressed and deterministic keys, and
the one rule for what a storage failure means.

Every write is idempotent: content-addressed keys (sha256) and job-derived keys mean a replayed
message overwrites the same object instead of adding a new one.

A storage failure is either the message's own fault or an outage, and every stage asks
`classify_storage_error` (or wraps its storage calls in `storage_errors()`) which one it is:
- ObjectMissing (permanent): the object a message names does not exist;
- StorageRefused (permanent): storage refused this request for what it is (an invalid key, an
  object too large);
- ContentMismatch (permanent): a content-addressed key holds other bytes than it names;
- StorageUnavailable (transient): anything else (connection refused, timeouts, 5xx, throttling,
  a missing bucket or bad credentials): not the message's fault, so it is retried, never
  dead-lettered.
The store itself still raises the SDK's errors (S3Error, urllib3's), which callers outside the
stages test with `is_missing`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass

import certifi
import urllib3
from minio import Minio
from minio.commonconfig import CopySource
from minio.error import MinioException, S3Error

from processors.config import StorageSettings
from processors.runtime.errors import PermanentError, TransientError
from processors.storage_keys import content_key

# S3 error codes that mean "no such object" (MinIO and AWS answer with different ones).
MISSING_CODES = frozenset({"NoSuchKey", "NoSuchObject", "NotFound"})
# S3 error codes about the request itself: sending it again cannot succeed.
REFUSED_CODES = frozenset(
    {
        "InvalidObjectName",
        "XMinioInvalidObjectName",
        "KeyTooLongError",
        "EntityTooLarge",
        "MetadataTooLarge",
        "InvalidArgument",
        "InvalidDigest",
        "BadDigest",
    }
)

# The SDK's defaults wait 5 minutes per read and retry 5 times, so a frozen MinIO would hold a
# stage for half an hour before anything noticed. A read that makes no progress for this long is
# an outage; the stage's own retry loop (which records each retry) takes it from there.
CONNECT_TIMEOUT_S = 3.0
READ_TIMEOUT_S = 5.0
_RETRIES = urllib3.Retry(
    total=3,
    connect=3,
    read=1,  # one more try covers a pooled connection the server closed; a frozen server costs 2x
    status=2,
    backoff_factor=0.2,
    status_forcelist=[500, 502, 503, 504],
)


def is_missing(exc: S3Error) -> bool:
    """Whether an S3 error says the object does not exist (rather than that storage failed)."""
    return exc.code in MISSING_CODES


@dataclass(frozen=True)
class StoredObject:
    key: str
    sha256: str
    size: int
    content_type: str


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def http_client() -> urllib3.PoolManager:
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=CONNECT_TIMEOUT_S, read=READ_TIMEOUT_S),
        maxsize=10,
        cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),  # as the SDK does
        retries=_RETRIES,
    )


class ObjectStore:
    def __init__(self, settings: StorageSettings, client: Minio | None = None) -> None:
        self.bucket = settings.bucket
        self.client = client or Minio(
            settings.endpoint,
            access_key=settings.access_key,
            secret_key=settings.secret_key,
            secure=settings.secure,
            http_client=http_client(),
        )

    def ensure_bucket(self) -> None:
        if not self.client.bucket_exists(self.bucket):
            self.client.make_bucket(self.bucket)

    def put_bytes(
        self,
        key: str,
        data: bytes,
        content_type: str = "application/octet-stream",
        metadata: dict[str, str] | None = None,
    ) -> StoredObject:
        self._upload(key, data, content_type, metadata)
        return StoredObject(key, sha256_hex(data), len(data), content_type)

    def _upload(self, key: str, data: bytes, content_type: str, metadata: dict[str, str] | None) -> None:
        # Never put "content-type" in metadata: the SDK would send the header twice and MinIO
        # rejects the signature.
        self.client.put_object(
            self.bucket,
            key,
            io.BytesIO(data),
            len(data),
            content_type=content_type,
            metadata=metadata or None,
        )

    def put_content_addressed(
        self,
        prefix: str,
        data: bytes,
        content_type: str,
        extension: str = "",
        metadata: dict[str, str] | None = None,
    ) -> tuple[StoredObject, bool]:
        """Store under the content's sha256. Returns (object, created): created is False when the
        same bytes were already stored, in which case nothing is uploaded."""
        digest = sha256_hex(data)
        key = content_key(prefix, digest, extension)
        if self.exists(key):
            return StoredObject(key, digest, len(data), content_type), False
        self._upload(key, data, content_type, metadata)
        return StoredObject(key, digest, len(data), content_type), True

    def get_bytes(self, key: str) -> bytes:
        response = self.client.get_object(self.bucket, key)
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    def get_checked(self, key: str, digest: str | None) -> bytes:
        """The bytes under `key`, proven to be those whose sha256 is `digest` (the one a
        content-addressed key names); None: unchecked. ContentMismatch otherwise."""
        data = self.get_bytes(key)
        if digest is not None and (actual := sha256_hex(data)) != digest:
            raise ContentMismatch(f"{key} holds bytes with sha256 {actual}, not the {digest} it names")
        return data

    def claimant(self, key: str) -> str | None:
        """Who claimed `key` (see claim), None if nobody did."""
        try:
            return str(json.loads(self.get_bytes(key))["claimant"])
        except S3Error as exc:
            if not is_missing(exc):
                raise
        except (ValueError, KeyError, TypeError):
            pass  # unreadable: as good as unclaimed, the next claim rewrites it
        return None

    def claim(self, key: str, claimant: str) -> None:
        """Record that `claimant` (an input's place on the broker) did the work `key` names once.

        For a stage that must act once per job while copies of the job arrive at other offsets
        (at least once upstream): it checks claimant() first, does the work, then claims. One
        consumer handles a partition's records in order, so two copies of one job (same key,
        same partition) never race between the check and the claim."""
        self.put_bytes(key, json.dumps({"claimant": claimant}).encode(), "application/json")

    def exists(self, key: str) -> bool:
        try:
            self.client.stat_object(self.bucket, key)
        except S3Error as exc:
            if is_missing(exc):
                return False
            raise
        return True

    def metadata(self, key: str) -> dict[str, str]:
        stat = self.client.stat_object(self.bucket, key)
        return {k.lower(): v for k, v in (stat.metadata or {}).items()}

    def delete(self, key: str) -> None:
        self.client.remove_object(self.bucket, key)

    def copy(self, source_key: str, dest_key: str) -> None:
        self.client.copy_object(self.bucket, dest_key, CopySource(self.bucket, source_key))

    def list_keys(self, prefix: str) -> Iterator[str]:
        for obj in self.client.list_objects(self.bucket, prefix=prefix, recursive=True):
            if obj.object_name is not None:
                yield obj.object_name


class StorageUnavailable(TransientError):
    """Storage could not be reached or failed on its side: an outage, never the message's fault."""

    reason = "storage_unavailable"


class ObjectFault(PermanentError):
    """What storage says about the object a message names: retrying cannot help."""

    reason = "storage_fault"


class ObjectMissing(ObjectFault):
    """The object a message names is not in storage."""

    reason = "missing_source_file"


class StorageRefused(ObjectFault):
    """Storage refused the request for what it is (an invalid key, an object too large)."""

    reason = "storage_refused"


class ContentMismatch(ObjectFault):
    """The bytes under a content-addressed key are not the ones the key names."""

    reason = "content_mismatch"


def classify_storage_error(exc: BaseException) -> TransientError | PermanentError | None:
    """What a storage failure means, as the runtime's classes: None when `exc` is not about
    storage at all (the caller's own rules apply). An error already classified is returned as
    it is. FileNotFoundError counts as missing: ReferenceImages raises it for a missing object."""
    if isinstance(exc, TransientError | PermanentError):
        return exc
    if isinstance(exc, S3Error):
        where = f"{exc.bucket_name or '?'}/{exc.object_name or '?'}"
        if is_missing(exc):
            return ObjectMissing(f"{where} is not in storage ({exc.code})")
        if exc.code in REFUSED_CODES:
            return StorageRefused(f"storage refused {where}: {exc.code}: {exc.message}")
        return StorageUnavailable(f"storage failed on {where}: {exc.code}: {exc.message}")
    if isinstance(exc, FileNotFoundError):
        return ObjectMissing(str(exc))
    if isinstance(exc, MinioException):  # 5xx, a non-XML answer (a proxy's error page)
        return StorageUnavailable(f"storage answered with an error: {_short(exc)}")
    if isinstance(exc, urllib3.exceptions.HTTPError | ConnectionError | TimeoutError):
        return StorageUnavailable(f"storage unreachable: {_short(exc)}")
    return None


@contextlib.contextmanager
def storage_errors() -> Iterator[None]:
    """Re-raise a storage failure inside the block as classify_storage_error names it (the SDK's
    error chained as the cause); anything else passes through untouched."""
    try:
        yield
    except Exception as exc:
        classified = classify_storage_error(exc)
        if classified is None or classified is exc:
            raise
        raise classified from exc


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]
