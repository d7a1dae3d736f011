"""Idempotency-Key for POST /v1/requests: the same key with the same body gets the first answer
again, and nothing is published twice; the same key with another body is refused (422).

Answers are kept in object storage, one small JSON object per (caller, key), so every gateway
replica and a restarted gateway see them; a key is scoped to the calling token (its id, not its
name, which two tokens may share), so two clients that happen to pick the same key never see each
other's answers. Within one gateway, requests
with the same key wait for each other (a lock per key); two replicas racing on one key may both
publish, which intake's de-duplication on the event id then absorbs. Only accepted answers (2xx)
are kept: a request refused for its content, or for an outage, may be sent again as it is.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Any

from minio.error import S3Error

from gateway.web.responses import Problem
from processors.storage import ObjectStore, is_missing

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_CHARS = 255
_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")  # visible ASCII, as the IETF draft's examples


@dataclass(frozen=True)
class Remembered:
    body_sha256: str
    status: int
    response: dict[str, Any]
    created_ms: int


def body_digest(body: Any) -> str:
    """The body's identity: its JSON canonicalised, so whitespace and key order do not matter."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def check_key(value: str) -> str:
    if not _KEY.match(value):
        raise Problem(
            400,
            f"{HEADER} must be 1-{MAX_KEY_CHARS} visible ASCII characters",
            field=HEADER,
            limit=MAX_KEY_CHARS,
            kind="invalid-field",
        )
    return value


class IdempotencyStore:
    def __init__(self, store: ObjectStore, topic_prefix: str, ttl_s: float) -> None:
        self.store = store
        self.scope = topic_prefix.rstrip(".") or "_"
        self.ttl_s = ttl_s
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    def _object_key(self, caller: str, key: str) -> str:
        digest = hashlib.sha256(f"{caller}\0{key}".encode("utf-8", "surrogatepass")).hexdigest()
        return f"gateway/idempotency/{self.scope}/{digest}.json"

    @asynccontextmanager
    async def held(self, caller: str, key: str) -> AsyncIterator[None]:
        """One request at a time per (caller, key) in this process."""
        name = self._object_key(caller, key)
        lock, users = self._locks.get(name) or (asyncio.Lock(), 0)
        self._locks[name] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[name]
            if users <= 1:
                del self._locks[name]
            else:
                self._locks[name] = (lock, users - 1)

    def get(self, caller: str, key: str) -> Remembered | None:
        """Blocking (storage): the remembered answer, unless there is none or it expired."""
        try:
            raw = self.store.get_bytes(self._object_key(caller, key))
        except S3Error as exc:
            if is_missing(exc):
                return None
            raise
        remembered = Remembered(**json.loads(raw))
        if remembered.created_ms < (time.time() - self.ttl_s) * 1000:
            return None
        return remembered

    def put(self, caller: str, key: str, remembered: Remembered) -> None:
        data = json.dumps(asdict(remembered), default=str).encode()
        self.store.put_bytes(self._object_key(caller, key), data, "application/json")
