"""One asyncio lock per key, kept only while someone holds or waits for it.

For a stage's check-work-claim sequences (ObjectStore.claimant / claim): the records of one batch
run concurrently, so two copies of one job in the same batch (a share group's redelivery beside
the original, or a redone upstream batch) would both find no claim. Holding the job's key around
the whole sequence makes the second copy find the first one's claim. Copies of one job always
reach the same process (one partition, or one share group member's batch), so an in-process lock
is enough.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class KeyedLocks:
    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key) or (asyncio.Lock(), 0)
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)
