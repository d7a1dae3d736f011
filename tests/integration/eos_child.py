"""A stage process for test_exactly_once: `python -m tests.integration.eos_child PREFIX MODE N`.

MODE kill: handles its batch, produces everything in the transaction, then SIGKILLs itself just
before commit_transaction (the window in which, at least once, a restart duplicated outputs).
MODE run: the same stage copy (the same transactional.id) run until it has handled N records.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any, ClassVar

from confluent_kafka import Producer

from processors.config import load_settings
from processors.kafka_clients import make_producer, transactional_producer_config
from processors.runtime import Event, InputRecord, Outcome, Stage
from processors.runtime.runner import StageRunner
from processors.runtime.stage import StageContext
from schemas.topics import Topic

STAGE = "eostest"


class Approve(Stage):
    name: ClassVar[str] = STAGE
    inputs: ClassVar[tuple[Topic, ...]] = (Topic.REVIEW_DECISIONS,)
    outputs: ClassVar[tuple[Topic, ...]] = ()
    stop_after: int = 0
    runner: StageRunner | None = None
    handled: int = 0

    async def handle(self, record: InputRecord) -> Outcome:
        self.handled += 1
        if self.stop_after and self.handled >= self.stop_after and self.runner is not None:
            self.runner.request_stop()  # after this batch commits
        return Outcome(events=[Event(record.value["job_id"], "approved")])


class KilledBeforeCommit(Producer):  # type: ignore[misc]
    def commit_transaction(self, *args: Any) -> None:
        self.flush(30)  # every output is on the broker, in the open transaction
        os.kill(os.getpid(), signal.SIGKILL)


async def main(prefix: str, mode: str, count: int) -> None:
    base = load_settings()
    settings = base.model_copy(
        update={"kafka": base.kafka.model_copy(update={"topic_prefix": prefix, "instance": "eos-0"})}
    )
    stage = Approve(StageContext(settings, STAGE))
    stage.stop_after = count if mode == "run" else 0
    producer = (
        KilledBeforeCommit(transactional_producer_config(settings, STAGE))
        if mode == "kill"
        else Producer(transactional_producer_config(settings, STAGE))
    )
    runner = StageRunner(
        stage, producer=producer, transactional=True, events_producer=make_producer(settings)
    )
    stage.runner = runner
    await runner.run()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
