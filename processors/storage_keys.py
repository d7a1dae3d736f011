"""Every object-store key layout Lightbox writes, in one place.

Keys are content-addressed (references, masks) or derived from the job id (generated images,
derivatives, review records, published files), so a replayed batch rewrites the same objects
instead of making new ones. Anything that reads or writes the store builds its keys here.
"""

from __future__ import annotations

from typing import Any

REFS_PREFIX = "refs"
MASKS_PREFIX = "masks"
GENERATED_PREFIX = "generated"
DERIVATIVES_PREFIX = "assets"
REVIEW_PREFIX = "review"
URL_CACHE_DIR = "url-cache"
# Beside a job's published files: everything about how they were made.
LINEAGE_FILENAME = "lineage.json"


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


def generated_key(job: dict[str, Any], request_id: str) -> str:
    """One image per job, attempt and best-of-N variant (request ids end in #<variant>)."""
    variant = request_id.split("#", 1)[1] if "#" in request_id else "0"
    return f"{generated_prefix(job['job_id'])}a{job.get('attempt', 0)}/v{variant}.png"


def derivative_key(name: str) -> str:
    """A channel derivative; `name` is imaging.derivatives.derivative_name (job id / file)."""
    return f"{DERIVATIVES_PREFIX}/{name}"


def review_root(topic_prefix: str = "") -> str:
    """Held jobs are kept per topic prefix: pipelines sharing a bucket keep separate queues."""
    return f"{REVIEW_PREFIX}/{topic_prefix.rstrip('.')}/" if topic_prefix else f"{REVIEW_PREFIX}/"


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
