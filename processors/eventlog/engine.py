"""ClickHouse calls on threads of their own: how the sink's inserts and its queries share the engine
without waiting on each other.

A lane is a small pool of threads, each with its own ClickHouse client. chDB (4.x) allows any
number of connections to the one engine a process hosts and runs queries from different
connections in parallel, but one connection serialises its calls (and a streaming result left
open on it makes the next call return nothing). So nothing is ever shared: the sink writes on the
`ingest` lane, its own service queries (status, summary, health) run on the `queries` lane, and
analyst SQL on the `analyst` lane, each lane with its own connections. A ten-second analyst query
then costs the inserts CPU, never their turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from clickhouse_connect.driver.client import Client


class ClickHouseLane:
    """Runs calls on `threads` dedicated threads, each thread with a client of its own."""

    def __init__(self, name: str, client_factory: Callable[[], Client], threads: int = 1) -> None:
        if threads < 1:
            raise ValueError(f"a lane needs at least one thread, not {threads}")
        self.name = name
        self.threads = threads
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=f"clickhouse-{name}")
        self._factory = client_factory
        self._local = threading.local()
        self._clients: list[Client] = []
        self._lock = threading.Lock()
        # Bumped by reset(): a thread whose client is older makes a new one before its next call.
        self._generation = 0

    def _get(self) -> Client:
        local = self._local
        if getattr(local, "client", None) is None or local.generation != self._generation:
            self._drop_local()
            client = self._factory()
            with self._lock:
                self._clients.append(client)
            local.client, local.generation = client, self._generation
        return local.client

    def _drop_local(self) -> None:
        client = getattr(self._local, "client", None)
        self._local.client = None
        if client is None:
            return
        with self._lock:
            if client in self._clients:
                self._clients.remove(client)
        with contextlib.suppress(Exception):
            client.close()

    async def call(self, func: Callable[..., Any], *args: Any) -> Any:
        """func(client, *args) on one of the lane's threads."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: func(self._get(), *args))

    def reset(self) -> None:
        """Make every thread open a new client before its next call: after an outage a server may
        have restarted (and lost the table the factory creates)."""
        self._generation += 1

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            with contextlib.suppress(Exception):
                client.close()
