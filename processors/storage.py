"""Object storage (MinIO/S3) through the minio SDK: content-addressed and deterministic keys.

Every write is idempotent: content-addressed keys (sha256) and job-derived keys mean a replayed
message overwrites the same object instead of adding a new one.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass

from minio import Minio
from minio.commonconfig import CopySource
from minio.error import S3Error

from processors.config import StorageSettings
from processors.storage_keys import content_key

# S3 error codes that mean "no such object" (MinIO and AWS answer with different ones).
MISSING_CODES = frozenset({"NoSuchKey", "NoSuchObject", "NotFound"})


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


class ObjectStore:
    def __init__(self, settings: StorageSettings, client: Minio | None = None) -> None:
        self.bucket = settings.bucket
        self.client = client or Minio(
            settings.endpoint,
            access_key=settings.access_key,
            secret_key=settings.secret_key,
            secure=settings.secure,
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
