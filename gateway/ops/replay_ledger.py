"""The dead-letter replay ledger: which dead letters were already replayed, so replaying the same
range twice sends nothing the second time (docs/decisions.md, "The dead-letter replay ledger").

It lives in object storage beside the offloaded originals: one JSON object per replayed chunk
of one dlq partition, `dlq-replays/<dlq topic>/<partition>/<first>-<last>-<replay id>.json`,
listing the offsets it replayed. Reading the ledger of a partition is one prefix listing plus
one read per chunk; writing a chunk is one object, written after the broker acknowledged the
chunk's messages (a crash in between replays at most that chunk again, which the stages'
idempotent effects absorb).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from processors.storage import ObjectStore

PREFIX = "dlq-replays"


def partition_prefix(dlq_topic: str, partition: int) -> str:
    return f"{PREFIX}/{dlq_topic}/{partition}/"


def chunk_key(dlq_topic: str, partition: int, first: int, last: int, replay_id: str) -> str:
    # Zero-padded offsets: a listing comes back in offset order.
    return f"{partition_prefix(dlq_topic, partition)}{first:020d}-{last:020d}-{replay_id}.json"


@dataclass
class Ledger:
    """The replayed offsets of one dlq partition, and which replay sent each."""

    dlq_topic: str
    partition: int
    replayed: dict[int, str] = field(default_factory=dict)  # dlq offset -> replay id

    @classmethod
    def load(cls, store: ObjectStore, dlq_topic: str, partition: int) -> Ledger:
        ledger = cls(dlq_topic, partition)
        for key in store.list_keys(partition_prefix(dlq_topic, partition)):
            document = json.loads(store.get_bytes(key))
            for offset in document["offsets"]:
                ledger.replayed.setdefault(int(offset), str(document["replay_id"]))
        return ledger

    def record(self, store: ObjectStore, replay_id: str, offsets: list[int], detail: dict[str, Any]) -> None:
        if not offsets:
            return
        document = {"replay_id": replay_id, "offsets": sorted(offsets), **detail}
        key = chunk_key(self.dlq_topic, self.partition, min(offsets), max(offsets), replay_id)
        store.put_bytes(key, json.dumps(document).encode(), content_type="application/json")
        for offset in offsets:
            self.replayed[offset] = replay_id
