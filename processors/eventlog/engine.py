"""One ClickHouse client used from one thread: how the sink and its query endpoint share the engine.

chDB sessions are not meant to be shared across threads, so every call runs on one dedicated
thread, in order. The sink (sink.py) writes through it and the query endpoint (server.py) reads
through it; both import it from here, so neither imports the other's module to get it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from clickhouse_connect.driver.client import Client


class ClickHouseWorker:
    """Serialises every call to one ClickHouse client on one thread."""

    def __init__(self, client_factory: Callable[[], Client]) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse")
        self._factory = client_factory
        self._client: Client | None = None

    def _get(self) -> Client:
        if self._client is None:
            self._client = self._factory()
        return self._client

    async def call(self, func: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: func(self._get(), *args))

    def close(self) -> None:
        self._executor.shutdown(wait=True)
