"""Stored product references and their masks, decoded, for the stages that look at them.

Keys are content-addressed (refs/sha256/..., masks/sha256/...), so a decoded image never goes
stale: a small LRU saves the download and the decode for every job of the same product (one
product fans out into a job per channel and locale). Callers must treat the images as read-only.
"""

from __future__ import annotations

import io
from functools import lru_cache
from typing import Any

from minio.error import S3Error
from PIL import Image

from processors.storage import ObjectStore, is_missing


class ReferenceImages:
    def __init__(self, store: ObjectStore, maxsize: int = 64) -> None:
        self._store = store
        self._load = lru_cache(maxsize=maxsize)(self._decode)

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
