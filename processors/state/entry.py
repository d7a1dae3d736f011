"""One entry of intake's de-duplication table, as held in memory and as written to the changelog.

Memory is what bounds the table (millions of entries), so an entry is a slotted record of plain
values: no dict per entry, no datetime objects, and the key lives only as the table's dict key.
``to_record``/``from_record`` convert to and from the seen_event Avro record (latest version);
older records read with the defaults of the fields they lack (see schemas/avro/seen_event/).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from typing import Any

EVENT_PREFIX = "event:"
SLOT_PREFIX = "slot:"
# Written before slots existed (seen_event v1/v2): one per job, keyed by a job id that was
# derived from the slot key alone. Still read, so a changelog from before keeps its meaning.
LEGACY_JOB_PREFIX = "job:"
UNKNOWN = -1


def event_key(event_id: str) -> str:
    return f"{EVENT_PREFIX}{event_id}"


def slot_key(idempotency_key: str) -> str:
    return f"{SLOT_PREFIX}{idempotency_key}"


def legacy_job_key(job_id: str) -> str:
    return f"{LEGACY_JOB_PREFIX}{job_id}"


def epoch_ms(value: dt.datetime | int | None, default: int = UNKNOWN) -> int:
    """Epoch milliseconds from what fastavro gives for a timestamp-millis (datetime) or an int."""
    if value is None:
        return default
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return int(value.timestamp() * 1000)
    return int(value)


@dataclass(slots=True)
class SeenEntry:
    """What intake remembers under one key. Which fields mean something depends on the key:

    event:<id>   job_ids (the jobs it made), digest (of the event as received), occurred_at;
                 event_id is empty in memory (the key holds it) and written out from the key
    slot:<key>   job_ids (the current version's job, one), event_id (the event that made it),
                 digest (of its product content), occurred_at (newest accepted for the slot),
                 asset_version, supersedes

    digest is the raw sha256 (32 bytes, half the memory of its hex); empty: unknown (written
    before v3).
    """

    partition: int  # the changelog partition it lives in (= its catalog.events slot partition)
    job_ids: tuple[str, ...]
    event_id: str
    first_seen_at: int
    updated_at: int
    source_partition: int = UNKNOWN
    source_offset: int = UNKNOWN
    digest: bytes = b""
    occurred_at: int = UNKNOWN
    asset_version: int = UNKNOWN
    supersedes: str | None = None

    def written_by(self, partition: int, offset: int) -> bool:
        """Whether this very catalog message wrote the entry (it is being redelivered)."""
        return (self.source_partition, self.source_offset) == (partition, offset)

    def same_digest(self, hex_digest: str) -> bool:
        return self.digest == bytes.fromhex(hex_digest)

    def expired(self, now_ms: int, ttl_ms: int) -> bool:
        return self.updated_at + ttl_ms <= now_ms

    def touched(self, **changes: Any) -> SeenEntry:
        """A copy with some fields changed; the caller sets updated_at."""
        return replace(self, **changes)

    def to_record(self, key: str) -> dict[str, Any]:
        return {
            "key": key,
            "job_ids": list(self.job_ids),
            "event_id": self.event_id or (key[len(EVENT_PREFIX) :] if key.startswith(EVENT_PREFIX) else ""),
            "first_seen_at": self.first_seen_at,
            "source_partition": self.source_partition,
            "source_offset": self.source_offset,
            "updated_at": self.updated_at,
            "digest": self.digest.hex(),
            "occurred_at": self.occurred_at,
            "asset_version": self.asset_version,
            "supersedes": self.supersedes,
        }

    @classmethod
    def from_record(cls, value: dict[str, Any], partition: int) -> SeenEntry:
        key = str(value.get("key", ""))
        event_id = str(value.get("event_id", ""))
        if key.startswith(EVENT_PREFIX) and key.endswith(event_id):
            event_id = ""  # the key holds it
        first_seen = epoch_ms(value.get("first_seen_at"), 0)
        updated = int(value.get("updated_at", UNKNOWN))
        occurred = int(value.get("occurred_at", UNKNOWN))
        version = int(value.get("asset_version", UNKNOWN))
        return cls(
            partition=partition,
            job_ids=tuple(value.get("job_ids") or ()),
            event_id=event_id,
            first_seen_at=first_seen,
            # Equal numbers share one int object (millions of entries); written before v3 the
            # entry has not been touched since it was first seen.
            updated_at=first_seen if updated in (UNKNOWN, first_seen) else updated,
            source_partition=int(value.get("source_partition", UNKNOWN)),
            source_offset=int(value.get("source_offset", UNKNOWN)),
            digest=_raw_digest(value.get("digest")),
            occurred_at=occurred,
            asset_version=occurred if version == occurred else version,
            supersedes=value.get("supersedes"),
        )


def _raw_digest(hex_digest: Any) -> bytes:
    try:
        return bytes.fromhex(hex_digest) if hex_digest else b""
    except (TypeError, ValueError):
        return b""  # unreadable: unknown, as before v3
