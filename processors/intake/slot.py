"""Where a product's catalog events must be for intake to de-duplicate them: its slot partition.

Every asset slot of a product (its idempotency keys) starts with the SKU, so keying by SKU puts
all of one product's de-duplication entries in one partition, and one consumer decides about all
of them in offset order. Upstream producers key as they like (null keys, their own ids, another
partitioner), so intake does not trust the key: an event is handled only in the partition the
SKU maps to, and anywhere else it is republished there, keyed by SKU (a `rekeyed` event).

The mapping is CRC-32 of the SKU's UTF-8 bytes modulo the partition count: librdkafka's default
partitioner for keyed messages (``consistent_random``), so the project's own producers
(`lightbox submit`, the HTTP gateway) already land every event in its slot partition. A producer
keying by SKU with Java's default (murmur2) lands elsewhere and costs one republish per event.

A budgeted request (one a credit account covers) is handled in its account's partition instead
(the same mapping of the account name), so one consumer holds each account's ledger and decides
every reservation against it, however many intake replicas run (docs/decisions.md, "Credits").
"""

from __future__ import annotations

import zlib


def slot_partition(sku: str, partitions: int) -> int:
    if partitions < 1:
        raise ValueError(f"a topic has at least one partition, not {partitions}")
    return zlib.crc32(sku.encode("utf-8", "surrogatepass")) % partitions


def account_partition(account: str, partitions: int) -> int:
    """Where a budgeted request is decided: its account's ledger lives in this partition."""
    return slot_partition(account, partitions)
