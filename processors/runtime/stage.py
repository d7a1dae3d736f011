"""A stage: a consumer group with input topics and a handler. Subclass Stage (one record at a time,
run concurrently within a batch) or BatchStage (the whole batch at once: the GPU worker, the sink)."""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from processors.config import Settings, StageSettings
from processors.metrics import StageMetrics
from processors.runtime.records import InputRecord, Outcome
from schemas.topics import Topic, TopicNames

if TYPE_CHECKING:
    from processors.storage import ObjectStore


@dataclass
class StageContext:
    settings: Settings
    stage_name: str
    metrics: StageMetrics = field(init=False)

    def __post_init__(self) -> None:
        self.metrics = StageMetrics(self.stage_name)

    @cached_property
    def topics(self) -> TopicNames:
        return TopicNames(self.settings.kafka.topic_prefix)

    @cached_property
    def store(self) -> ObjectStore:
        # Imported here: processors.storage imports the runtime's errors, and importing it while
        # this package initialises would make the two depend on which is imported first.
        from processors.storage import ObjectStore

        return ObjectStore(self.settings.storage)

    @cached_property
    def log(self) -> logging.Logger:
        return logging.getLogger(f"lightbox.{self.stage_name}")


class Stage(ABC):
    name: ClassVar[str]
    inputs: ClassVar[tuple[Topic, ...]]
    # Topics the stage's outcomes may name (pipeline events and dead letters are the runtime's);
    # processors/topology.py lists the same, and the runner refuses anything else.
    outputs: ClassVar[tuple[Topic, ...]]
    # One process only (the event-log sink owns the embedded ClickHouse engine).
    singleton: ClassVar[bool] = False
    # How many records of one batch are handled at once (I/O-bound handlers benefit).
    concurrency: ClassVar[int] = 8
    # Most records a batch brings this stage; None: the stage settings' batch_size. A batch's
    # outputs are produced and committed when all of it is handled, so a CPU-bound stage takes a
    # few: the stages after it see each few jobs' outputs, not a burst's, and work meanwhile.
    max_batch: ClassVar[int | None] = None
    # Batches fetched ahead while one is processed; 0: poll, process, commit in turn. Past this
    # many queued batches the runner pauses the partitions (backpressure).
    prefetch_batches: int = 0

    def __init__(self, ctx: StageContext) -> None:
        self.ctx = ctx
        self._semaphore = asyncio.Semaphore(self.concurrency)

    def consumption(self) -> Literal["group", "share"]:
        """How the runner reads the inputs: a consumer group (partitions, offsets committed with
        the outputs), or a share group (records acknowledged one by one: runtime/share_feed.py).
        Called before start(); a stage that can be shared says so from its settings."""
        return "group"

    def consumer_overrides(self) -> dict[str, Any]:
        """librdkafka consumer properties this stage sets beyond the shared configuration
        (kafka_clients.consumer_config); called before start()."""
        return {}

    def batch_limit(self) -> int | None:
        """Most records a batch brings this stage (max_batch; a stage whose limit is
        configuration says so here)."""
        return self.max_batch

    def stage_settings(self) -> StageSettings:
        """The runtime settings the runner feeds this stage with (batch size and wait); a stage
        whose work favours other batches says so here, once (called before start())."""
        stage = self.ctx.settings.stage
        limit = self.batch_limit()
        if limit is None:
            return stage
        return stage.model_copy(update={"batch_size": min(stage.batch_size, limit)})

    async def start(self) -> None:
        """Open sessions, load models; called once before the first batch."""

    async def stop(self) -> None:
        """Release what start() opened; called once after the last batch."""

    def partitions_assigned(self, topic: Topic, partitions: list[int]) -> None:
        """Rebalance hook, called on the poll thread: note what to restore, do not block."""

    def partitions_revoked(self, topic: Topic, partitions: list[int]) -> None:
        """Rebalance hook, called on the poll thread: forget what is the new owner's, do not
        block."""

    async def before_batch(self) -> None:
        """Called before each batch is handled: restore state, reload rules."""

    @abstractmethod
    async def handle(self, record: InputRecord) -> Outcome:
        """Process one record. Raise to have the runtime retry or dead-letter it."""

    async def run_blocking(self, func, /, *args, **kwargs):  # type: ignore[no-untyped-def]
        """Run synchronous I/O (MinIO SDK, Pillow) off the event loop, bounded by concurrency."""
        async with self._semaphore:
            return await asyncio.to_thread(func, *args, **kwargs)


class BatchStage(Stage):
    """A stage that sees the whole consumed batch at once."""

    @abstractmethod
    async def handle_batch(self, records: list[InputRecord]) -> list[Outcome]:
        """One Outcome per record, in order. Raising retries the whole batch."""

    async def handle(self, record: InputRecord) -> Outcome:
        return (await self.handle_batch([record]))[0]
