"""Every object-store key layout Lightbox writes, in one place.

Keys are content-addressed (references, masks), derived from the job id (derivatives, review
records, published files, notification outbox entries) or both (generated images: the job's
folder, the image's sha256), so a replayed batch rewrites the same objects instead of making new
ones, and never puts other pixels under a name already written. Anything that reads or writes
the store builds its keys here.
"""

from __future__ import annotations

import re
from typing import Any

REFS_PREFIX = "refs"
MASKS_PREFIX = "masks"
GENERATED_PREFIX = "generated"
DERIVATIVES_PREFIX = "assets"
REVIEW_PREFIX = "review"
NOTIFY_PREFIX = "notify"
HANDLED_PREFIX = "handled"
# Originals of dead letters too large to carry (processors/runtime/dlq.py offloads them).
DEAD_LETTERS_PREFIX = "dead-letters"
URL_CACHE_DIR = "url-cache"
# Beside a job's published files: everything about how they were made.
LINEAGE_FILENAME = "lineage.json"
_GENERATED_DIGEST = re.compile(r"/([0-9a-f]{64})\.png$")


def content_key(prefix: str, digest: str, extension: str = "") -> str:
    """refs/sha256/ab/abcdef...png: fan out on the first byte so listings stay small."""
    ext = f".{extension.lstrip('.')}" if extension else ""
    return f"{prefix.rstrip('/')}/sha256/{digest[:2]}/{digest}{ext}"


def mask_key(image_digest: str) -> str:
    """One mask per distinct product image, keyed by the image's digest."""
    return content_key(MASKS_PREFIX, image_digest, "png")


def url_cache_prefix(prefix: str = REFS_PREFIX) -> str:
    """Where the persister's URL cache entries live, beside the objects they point at."""
    return f"{prefix.rstrip('/')}/{URL_CACHE_DIR}/"


def url_cache_key(url_digest: str, prefix: str = REFS_PREFIX) -> str:
    """Where the persister remembers which stored object a URL resolved to."""
    return f"{url_cache_prefix(prefix)}{url_digest}.json"


def generated_prefix(job_id: str) -> str:
    """Every generated image of one job, all attempts and variants."""
    return f"{GENERATED_PREFIX}/{job_id}/"


def generated_key(job_id: str, attempt: int, variant: int, digest: str) -> str:
    """One generated image: its job, attempt and best-of-N variant, and the sha256 of its bytes.

    Content-addressed on purpose. A redone generate batch (after a kill or a rebalance, possibly on
    another backend after failover) that draws other pixels writes another object, so the image
    the quality stage scored is never overwritten; the same pixels land on the same key."""
    return f"{generated_prefix(job_id)}a{attempt}/v{variant}/{digest}.png"


def generated_digest(key: str) -> str | None:
    """The sha256 a generated image's key names; None for a key that names none (one written
    before generated keys were content-addressed, or not a generated key at all)."""
    match = _GENERATED_DIGEST.search(key)
    return match.group(1) if match and key.startswith(f"{GENERATED_PREFIX}/") else None


def derivative_key(name: str) -> str:
    """A channel derivative; `name` is imaging.derivatives.derivative_name (job id / file)."""
    return f"{DERIVATIVES_PREFIX}/{name}"


def review_root(topic_prefix: str = "") -> str:
    """Held jobs are kept per topic prefix: pipelines sharing a bucket keep separate queues."""
    return _scoped(REVIEW_PREFIX, topic_prefix)


def pending_prefix(topic_prefix: str = "") -> str:
    return f"{review_root(topic_prefix)}pending/"


def pending_key(job_id: str, topic_prefix: str = "") -> str:
    return f"{pending_prefix(topic_prefix)}{job_id}.avro"


def decided_key(job_id: str, topic_prefix: str = "") -> str:
    return f"{review_root(topic_prefix)}decided/{job_id}.avro"


def published_prefix(prefix: str, job: dict[str, Any]) -> str:
    return f"{prefix.rstrip('/')}/{job['product']['sku']}/{job['job_id']}"


def published_key(prefix: str, job: dict[str, Any], filename: str) -> str:
    """One published file of a job: a derivative under its own file name, or the lineage document."""
    return f"{published_prefix(prefix, job)}/{filename}"


def _scoped(root: str, topic_prefix: str) -> str:
    # Per topic prefix, like the review queue: pipelines sharing a bucket keep separate state.
    return f"{root}/{topic_prefix.rstrip('.')}/" if topic_prefix else f"{root}/"


def notify_pending_prefix(topic_prefix: str = "") -> str:
    """The notification outbox: one entry per webhook delivery not yet made."""
    return f"{_scoped(NOTIFY_PREFIX, topic_prefix)}pending/"


def notify_pending_key(delivery_id: str, topic_prefix: str = "") -> str:
    return f"{notify_pending_prefix(topic_prefix)}{delivery_id}.json"


def notify_receipt_key(delivery_id: str, topic_prefix: str = "") -> str:
    """How a delivery ended (delivered, refused, given up): a delivery with a receipt is never
    sent again, whatever redelivers the publish that queued it."""
    return f"{_scoped(NOTIFY_PREFIX, topic_prefix)}done/{delivery_id}.json"


def handled_key(stage: str, job_id: str, topic_prefix: str = "", attempt: int | None = None) -> str:
    """Which input a stage first took a job (attempt) from: another input carrying the same job
    later (a copy made by a redone upstream batch) is a duplicate, not new work."""
    suffix = f"@a{attempt}" if attempt is not None else ""
    return f"{_scoped(HANDLED_PREFIX, topic_prefix)}{stage}/{job_id}{suffix}.json"


def dead_letter_key(original_topic: str, partition: int, offset: int, stage: str, part: str = "value") -> str:
    """dead-letters/<broker topic>/<partition>/<offset>/<stage>.<value|key>: one object per
    message and stage, so a redone batch rewrites the same object."""
    return f"{DEAD_LETTERS_PREFIX}/{original_topic}/{partition}/{offset}/{stage}.{part}"
