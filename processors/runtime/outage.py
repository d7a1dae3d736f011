"""What a batch does while something it depends on is down: hold the partitions (paused, the
feed polling so the group keeps the stage), wait by the backoff rule in a way a stop interrupts,
say so with `retry` events without flooding pipeline.events, and resume by itself.

Event volume: an outage round emits a `retry` event for every job still waiting on the first
failure, then at most once every stage.outage_event_interval_s (one per job each time; never more
than one per job per backoff step), however long the outage lasts. Counted retries (a record's
own failures, bounded by max_attempts) emit one each.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from processors.metrics import StageMetrics
from processors.runtime.errors import classify
from processors.runtime.feed import PartitionFeed
from processors.runtime.records import Event, InputRecord
from processors.runtime.retry import StopRequested
from processors.runtime.share_feed import ShareFeed
from processors.runtime.sizes import clip

Emit = Callable[[list[tuple[Event, InputRecord | None]]], None]
_holds = itertools.count(1)


class Outage:
    """One batch's hold on its partitions while a dependency is down."""

    def __init__(
        self,
        feed: PartitionFeed | ShareFeed,
        metrics: StageMetrics,
        log: logging.Logger,
        stage: str,
        event_interval_s: float,
        stopping: asyncio.Event,
    ) -> None:
        self.feed = feed
        self.metrics = metrics
        self.log = log
        self.stage = stage
        self.event_interval_s = event_interval_s
        self.stopping = stopping
        # Each hold its own reason: two batches in hand (prefetching) release theirs apart.
        self.reason = f"outage {next(_holds)}"
        self.since: float | None = None
        self._last_events: float | None = None

    async def hold(self, why: str) -> None:
        if self.since is not None:
            return
        self.since = time.monotonic()
        self.metrics.outages.labels(self.stage).inc()
        self.log.warning("dependency unavailable, holding the partitions until it is back: %s", why)
        await self.feed.hold(self.reason)

    async def release(self) -> None:
        if self.since is None:
            return
        lasted = time.monotonic() - self.since
        self.since = None
        await self.feed.release(self.reason)
        self.log.info("dependency back after %.1fs: partitions resumed", lasted)

    def events_due(self) -> bool:
        now = time.monotonic()
        if self._last_events is not None and now - self._last_events < self.event_interval_s:
            return False
        self._last_events = now
        return True

    async def wait(self, delay: float) -> None:
        if self.stopping.is_set():
            raise StopRequested("stopping while a dependency is down")
        try:
            await asyncio.wait_for(self.stopping.wait(), timeout=delay)
        except TimeoutError:
            return
        raise StopRequested("stopping while a dependency is down")


class BatchWatch:
    """retry.Watcher for one batch: outage rounds hold and report, counted retries report."""

    def __init__(
        self,
        outage: Outage,
        emit: Emit,
        metrics: StageMetrics,
        log: logging.Logger,
        stage: str,
        discard: Callable[[Any], Awaitable[None]],
    ) -> None:
        self.outage_ = outage
        self.emit = emit
        self.metrics = metrics
        self.log = log
        self.stage = stage
        self._discard = discard

    async def outage(
        self, round_: int, failing: list[tuple[InputRecord, BaseException]], delay: float
    ) -> None:
        first = failing[0][1]
        await self.outage_.hold(f"{type(first).__name__}: {first}")
        self.metrics.retries.labels(self.stage).inc(len(failing))
        self.log.warning(
            "dependency unavailable (round %d, %d record(s) waiting), retrying in %.2fs: %s",
            round_,
            len(failing),
            delay,
            first,
            extra={"reason": type(first).__name__, "attempt": round_},
        )
        if not self.outage_.events_due():
            return
        events: list[tuple[Event, InputRecord | None]] = []
        by_job = {record.job_id: record for record, _ in failing}
        covered: set[str] = set()
        for _, error in failing:
            # A stage may say it for the jobs itself (gpu_workers' BatchUnavailable.events).
            for event in getattr(error, "events", None) or []:
                if isinstance(event, Event) and event.job_id in by_job and event.job_id not in covered:
                    events.append((event, by_job[event.job_id]))
                    covered.add(event.job_id)
        for record, error in failing:
            if record.job_id in covered:
                continue
            covered.add(record.job_id)
            events.append(
                (
                    Event(
                        record.job_id,
                        "retry",
                        reason=type(error).__name__,
                        detail=clip(str(error), 500),
                        attempt=_attempt(record),
                        attributes={"fault": "dependency", "round": str(round_), "partitions": "held"},
                        submitted_at=record.value.get("submitted_at"),
                        discriminator=f"outage{round_}",
                    ),
                    record,
                )
            )
        self.emit(events)

    def retrying(self, item: InputRecord, error: BaseException, attempt: int, delay: float) -> None:
        self.metrics.retries.labels(self.stage).inc()
        self.log.warning(
            "failure, retrying in %.2fs: %s",
            delay,
            error,
            extra={"reason": type(error).__name__, "attempt": attempt},
        )
        event = Event(
            item.job_id,
            "retry",
            reason=type(error).__name__,
            detail=clip(str(error), 500),
            attempt=_attempt(item),
            attributes={"fault": classify(error).value, "try": str(attempt)},
            submitted_at=item.value.get("submitted_at"),
            discriminator=f"try{attempt}",
        )
        self.emit([(event, item)])

    async def wait(self, delay: float) -> None:
        await self.outage_.wait(delay)

    async def discard(self, value: Any) -> None:
        await self._discard(value)


def _attempt(record: InputRecord) -> int:
    try:
        return int(record.value.get("attempt") or 0)
    except (TypeError, ValueError):
        return 0
