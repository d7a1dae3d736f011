"""Stored product references and their masks, decoded, for the stages that look at them.

Keys are content-addressed (refs/sha256/..., masks/sha256/...), so a decoded image never goes
stale: a small LRU saves the download and the decode for every job of the same product (one
product fans out into a job per channel and locale). The LRU is bounded by the bytes its decoded
pixels occupy, not by a count: 64 camera-sized references would be gigabytes. Callers must
treat the images as read-only.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from typing import Any

from minio.error import S3Error
from PIL import Image

from processors.config import ReferenceSettings
from processors.references.decoding import decoded_bytes
from processors.storage import ObjectStore, is_missing

DEFAULT_CACHE_BYTES = ReferenceSettings().decoded_cache_bytes


class DecodedCache:
    """A least-recently-used map of decoded images whose pixels total at most ``max_bytes``
    (and at most ``max_entries`` of them). An image larger than the whole budget is handed out
    but never kept. Thread-safe: the stages decode in worker threads."""

    def __init__(self, max_bytes: int, max_entries: int = 64) -> None:
        self.max_bytes = max(0, max_bytes)
        self.max_entries = max(0, max_entries)
        self._entries: OrderedDict[tuple[str, bool], tuple[Image.Image, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: tuple[str, bool]) -> Image.Image | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            return entry[0]

    def put(self, key: tuple[str, bool], image: Image.Image) -> None:
        cost = image_bytes(image)
        with self._lock:
            if key in self._entries:
                return
            if cost > self.max_bytes or self.max_entries == 0:
                return
            self._entries[key] = (image, cost)
            self._bytes += cost
            while self._bytes > self.max_bytes or len(self._entries) > self.max_entries:
                _, (_, evicted) = self._entries.popitem(last=False)
                self._bytes -= evicted


def image_bytes(image: Image.Image) -> int:
    """What a decoded image's pixels occupy (Pillow keeps most modes at 4 bytes a pixel)."""
    return decoded_bytes(image.size, image.mode)


class ReferenceImages:
    def __init__(self, store: ObjectStore, maxsize: int = 64, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self._store = store
        self.cache = DecodedCache(max_bytes, maxsize)

    def _load(self, key: str, as_mask: bool) -> Image.Image:
        cached = self.cache.get((key, as_mask))
        if cached is not None:
            return cached
        image = self._decode(key, as_mask)
        self.cache.put((key, as_mask), image)
        return image

    def _decode(self, key: str, as_mask: bool) -> Image.Image:
        try:
            data = self._store.get_bytes(key)
        except S3Error as exc:
            if is_missing(exc):
                raise FileNotFoundError(f"stored reference {key} is missing from storage") from exc
            raise
        # No decode limit here on purpose: these bytes were proven by fetcher.inspect_image (pixel
        # limit included) before they were stored, and their key is their digest.
        image = Image.open(io.BytesIO(data))
        image.load()  # decode now: a lazily loaded image is not safe to share between threads
        return image.convert("L") if as_mask else image

    def product(self, ref: dict[str, Any]) -> Image.Image:
        """The product image; FileNotFoundError if it is gone from storage."""
        return self._load(ref["key"], False)

    def mask(self, ref: dict[str, Any]) -> Image.Image | None:
        """The product's mask, or None when it has none (or it is gone)."""
        if not ref.get("mask_key"):
            return None
        try:
            return self._load(ref["mask_key"], True)
        except FileNotFoundError:
            return None


def product_reference(job: dict[str, Any]) -> dict[str, Any] | None:
    return next((r for r in job.get("references", []) if r["role"] == "PRODUCT"), None)
