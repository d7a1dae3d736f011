"""Generated images into storage: encoded once, named by their content, uploaded with retries.

An image's key carries the sha256 of its PNG bytes (storage_keys.generated_key), so it is known
as soon as the image is encoded, before the upload, and the result that names it can be built
while the upload runs. Two runs that draw the same pixels write the same object; a run that
draws other pixels (a redone batch on another backend) writes another one and never touches an
image the quality stage may already have scored.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from PIL import Image

from processors.backoff import backoff_delay
from processors.config import StageSettings
from processors.imaging import formats, png_writer
from processors.runtime import TransientError
from processors.storage import ObjectStore, classify_storage_error, sha256_hex

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncodedImage:
    data: bytes
    sha256: str


def encode_png(image: Image.Image) -> EncodedImage:
    """These files are intermediates (quality and postprocess read them, the published
    derivatives are encoded anew), so encoding speed matters more than the last bytes."""
    data = png_writer.encode_png(image)
    return EncodedImage(data, sha256_hex(data))


class OutputWriter:
    """Uploads generated images. A storage blip is retried here, by the stage's backoff
    settings, before the upload (an effect, awaited after the batch was handled) fails: the
    runtime answers a failed effect by redoing its record, which regenerates the image, GPU time
    spent again for what a second PUT would have fixed. What still fails is raised classified
    (processors.storage.classify_storage_error)."""

    def __init__(self, store: ObjectStore, retry: StageSettings) -> None:
        self.store = store
        self.retry = retry

    async def upload(self, key: str, encoded: EncodedImage, metadata: dict[str, str]) -> None:
        attempt = 0
        while True:
            attempt += 1
            try:
                await asyncio.to_thread(self.store.put_bytes, key, encoded.data, formats.PNG, metadata)
                return
            except Exception as exc:
                classified = classify_storage_error(exc)
                if classified is None:
                    raise
                if not isinstance(classified, TransientError) or attempt >= self.retry.max_attempts:
                    raise classified from exc
                delay = backoff_delay(attempt, self.retry.backoff_initial_s, self.retry.backoff_max_s)
                log.warning("upload of %s failed, retrying in %.2fs: %s", key, delay, classified)
                await asyncio.sleep(delay)
