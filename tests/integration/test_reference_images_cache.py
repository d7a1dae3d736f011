"""The decoded-reference cache (processors/references/images.py) is bounded by bytes, against real
MinIO: what it evicted is read from storage again (here: found missing, since the test deleted
it), what it kept is not."""

from __future__ import annotations

import io
import uuid

import pytest
from PIL import Image

from processors.references.images import ReferenceImages, image_bytes
from processors.storage import ObjectStore

pytestmark = pytest.mark.integration


def _stored(store: ObjectStore, size: tuple[int, int], colour: tuple[int, int, int]) -> dict[str, str]:
    key = f"tests/ref-cache/{uuid.uuid4().hex}.png"
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    store.put_bytes(key, buf.getvalue(), "image/png")
    return {"key": key, "role": "PRODUCT"}


def test_the_cache_keeps_at_most_its_bytes_and_evicts_the_least_recently_used(store: ObjectStore) -> None:
    one = image_bytes(Image.new("RGB", (100, 100)))
    images = ReferenceImages(store, max_bytes=2 * one + one // 2)  # room for two, not three
    a, b, c = (_stored(store, (100, 100), colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255)))
    images.product(a)
    images.product(b)
    for ref in (a, b):
        store.delete(ref["key"])

    assert images.product(a).getpixel((0, 0)) == (255, 0, 0)  # cached: storage is not asked
    images.product(c)  # evicts b, the least recently used
    assert images.cache.size_bytes <= images.cache.max_bytes
    with pytest.raises(FileNotFoundError):
        images.product(b)
    assert images.product(a).getpixel((0, 0)) == (255, 0, 0)


def test_an_image_larger_than_the_cache_is_returned_but_never_kept(store: ObjectStore) -> None:
    images = ReferenceImages(store, max_bytes=image_bytes(Image.new("RGB", (100, 100))))
    small = _stored(store, (50, 50), (1, 2, 3))
    big = _stored(store, (300, 300), (9, 9, 9))
    images.product(small)
    assert images.product(big).size == (300, 300)
    assert len(images.cache) == 1  # the big one pushed nothing out and was not kept
    store.delete(big["key"])
    with pytest.raises(FileNotFoundError):
        images.product(big)
