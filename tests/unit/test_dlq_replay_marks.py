"""A replayed message that fails again carries its replay count and id into its new letter."""

from __future__ import annotations

import asyncio

from processors.runtime.dlq import (
    REPLAY_COUNT_HEADER,
    REPLAY_ID_HEADER,
    is_parked,
    parse_headers,
    replay_marks,
)
from processors.runtime.errors import PermanentError
from processors.runtime.memory import MemoryBroker, MemoryConsumer, MemoryProducer
from processors.runtime.runner import StageRunner
from schemas.topics import Topic
from tests.unit.test_runner_handling import EVENTS, JOBS, LETTERS, TOPICS, _forward, _job

MARKS = [(REPLAY_ID_HEADER, b"r-1"), (REPLAY_COUNT_HEADER, b"2")]


async def _run_one(broker: MemoryBroker, failures: dict) -> None:
    runner = StageRunner(
        _forward(failures), consumer=MemoryConsumer(broker, "g"), producer=MemoryProducer(broker)
    )
    await asyncio.wait_for(runner.run(max_batches=1), timeout=10)


def test_replay_marks_read_the_tool_headers_and_ignore_garbage() -> None:
    assert replay_marks(MARKS) == (2, "r-1")
    assert replay_marks([(REPLAY_COUNT_HEADER, b"-3")]) == (0, "")
    assert replay_marks(None) == (0, "")


def test_parked_once_replayed_max_times() -> None:
    assert not is_parked(0, 1) and is_parked(1, 1) and is_parked(4, 3)


async def test_a_replayed_record_failing_again_carries_its_replay_count() -> None:
    broker = MemoryBroker()
    broker.append(TOPICS(Topic.JOBS_ACCEPTED), JOBS.encode(_job("job-r")), key="job-r", headers=MARKS)
    await _run_one(broker, {"job-r": [PermanentError("still bad")]})
    (message,) = broker.messages(TOPICS(Topic.PIPELINE_DLQ))
    headers = parse_headers(message.headers())
    assert (headers["replays"], headers["replay.id"]) == ("2", "r-1")
    assert LETTERS.decode(message.value())["original_offset"] == 0
    (event,) = [EVENTS.decode(m.value()) for m in broker.messages(TOPICS(Topic.PIPELINE_EVENTS))]
    assert event["state"] == "dead_lettered" and event["attributes"]["replays"] == "2"


async def test_undecodable_replayed_bytes_carry_it_too_and_a_fresh_letter_has_none() -> None:
    broker = MemoryBroker()
    broker.append(TOPICS(Topic.JOBS_ACCEPTED), b"\x00junk", key="k", headers=MARKS)
    broker.append(TOPICS(Topic.JOBS_ACCEPTED), JOBS.encode(_job("job-f")), key="job-f")
    await _run_one(broker, {"job-f": [PermanentError("bad")]})
    by_key = {m.key(): parse_headers(m.headers()) for m in broker.messages(TOPICS(Topic.PIPELINE_DLQ))}
    assert by_key[b"k"]["replays"] == "2"
    assert "replays" not in by_key[b"job-f"]
