"""Connection slots and the per-attempt clock, kept apart so that queueing is never mistaken for
a slow origin.

Many jobs citing one CDN queue for its few connections (the per-host limit). If the wait for a
slot counted against a request's deadline, every request behind the first few would time out
together and be retried together, and a batch of jobs would fail on a host that was merely
busy. So a request's deadline runs only while it holds its slots (``AttemptClock``), and the
slots themselves (``DownloadSlots``) are waited for off the clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Origin:
    scheme: str
    host: str
    port: int


class DownloadSlots:
    """At most ``per_host`` requests to one origin, and at most ``total`` downloads with a body
    in hand (being read, or read and waiting to be proven) through the fetcher at once.

    The host slot is taken first, and the total slot only while holding it: a request waiting
    for a busy host never sits on one of the few total slots other hosts could use. A redirect
    gives the total slot back before it waits for the next host's slot, so no request ever
    waits for a host slot while holding a total slot (two such waits could deadlock).
    """

    def __init__(self, per_host: int, total: int) -> None:
        self._per_host = max(1, per_host)
        self._total = asyncio.Semaphore(max(1, total))
        # An origin's semaphore lives while someone holds or waits for it.
        self._hosts: weakref.WeakValueDictionary[Origin, asyncio.Semaphore] = weakref.WeakValueDictionary()
        self.in_flight = 0
        self.peak_in_flight = 0

    @contextlib.asynccontextmanager
    async def host(self, origin: Origin) -> AsyncIterator[None]:
        semaphore = self._hosts.get(origin)
        if semaphore is None:
            semaphore = asyncio.Semaphore(self._per_host)
            self._hosts[origin] = semaphore
        async with semaphore:
            yield

    async def acquire_total(self) -> None:
        await self._total.acquire()
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)

    def release_total(self) -> None:
        self.in_flight -= 1
        self._total.release()


class AttemptClock:
    """One attempt's deadline, spent only inside ``running()`` blocks (each hop's exchange)."""

    def __init__(self, budget_s: float) -> None:
        self.budget_s = budget_s
        self.spent_s = 0.0
        self.expired = False

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        remaining = self.budget_s - self.spent_s
        started = time.monotonic()
        try:
            async with asyncio.timeout(max(0.0, remaining)) as deadline:
                yield
        except TimeoutError:
            self.expired = self.expired or deadline.expired()
            raise
        finally:
            self.spent_s += time.monotonic() - started
