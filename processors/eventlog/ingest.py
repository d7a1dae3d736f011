"""Inserting a batch of event rows so that an outage pauses and a bad row costs only itself.

- An outage (faults.py) waits with capped exponential backoff (processors/backoff.py) and retries
  the same rows for as long as it takes: nothing is dead-lettered for it, and the caller commits
  nothing until the insert went in. The lane's clients are renewed between tries, so a server that
  restarted (or lost the table) is reconnected and the table created again.
- Rows ClickHouse refuses are found by splitting the batch in halves until the refused rows stand
  alone; every other row goes in. Each refused row comes back with its error for the caller to
  dead-letter.
- An error that says neither (faults.Fault.UNKNOWN) is split the same way; a row alone that still
  fails with it is refused only if other rows of the batch went in meanwhile (the engine is taking
  inserts, so the fault is the row's), else it is waited on like an outage.

Inserts are idempotent (the table replaces rows by event_id), so a retry after an insert that
went in but did not answer costs a duplicate that reads with FINAL never see.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from processors.backoff import backoff_delay
from processors.eventlog.engine import ClickHouseLane
from processors.eventlog.faults import Fault, classify


@dataclass(frozen=True)
class OutageBackoff:
    initial_s: float
    max_s: float

    def delay(self, attempt: int) -> float:
        return backoff_delay(attempt, self.initial_s, self.max_s)


@dataclass
class InsertReport:
    # Row index (in the batch given) -> the error ClickHouse refused that row with.
    refused: dict[int, BaseException] = field(default_factory=dict)
    outage_waits: int = 0  # retries spent waiting on an outage
    inserts: int = 0  # successful insert calls (1 when nothing was refused)


class Ingestor:
    def __init__(
        self,
        lane: ClickHouseLane,
        table: str,
        columns: Sequence[str],
        backoff: OutageBackoff,
        log: logging.Logger,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self.lane = lane
        self.table = table
        self.columns = list(columns)
        self.backoff = backoff
        self.log = log
        self._sleep = sleep
        self.paused_since: float | None = None  # monotonic time the current outage began

    async def insert(self, rows: list[list[Any]]) -> InsertReport:
        report = InsertReport()
        if rows:
            await self._insert_span(rows, 0, len(rows), report)
        return report

    async def _insert_span(self, rows: list[list[Any]], lo: int, hi: int, report: InsertReport) -> None:
        outage_attempt = 0
        while True:
            try:
                await self.lane.call(self._insert_rows, rows[lo:hi])
            except Exception as exc:
                fault = classify(exc)
                if fault is not Fault.OUTAGE and hi - lo > 1:
                    mid = (lo + hi) // 2
                    await self._insert_span(rows, lo, mid, report)
                    await self._insert_span(rows, mid, hi, report)
                    return
                if fault is Fault.DATA or (fault is Fault.UNKNOWN and report.inserts > 0):
                    report.refused[lo] = exc
                    return
                outage_attempt += 1
                report.outage_waits += 1
                self._wait_notice(exc, outage_attempt)
                self.lane.reset()
                await self._sleep(self.backoff.delay(outage_attempt))
                continue
            report.inserts += 1
            self._resumed_notice()
            return

    def _insert_rows(self, client: Any, rows: list[list[Any]]) -> None:
        client.insert(self.table, rows, column_names=self.columns)

    def _wait_notice(self, exc: BaseException, attempt: int) -> None:
        if self.paused_since is None:
            self.paused_since = time.monotonic()
        self.log.warning(
            "ClickHouse unavailable, ingestion paused (try %d, nothing committed); retrying in %.1fs: %s",
            attempt,
            self.backoff.delay(attempt),
            str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__,
            extra={"reason": "clickhouse_unavailable", "attempt": attempt},
        )

    def _resumed_notice(self) -> None:
        if self.paused_since is None:
            return
        self.log.warning(
            "ClickHouse is back: ingestion resumed after %.1fs paused",
            time.monotonic() - self.paused_since,
            extra={"reason": "clickhouse_resumed"},
        )
        self.paused_since = None
