"""The stage runtime: consume, decode, process, produce, commit, retry, dead-letter, emit events.

What a stage author uses is exported here: subclass Stage (or BatchStage), declare `inputs` and
`outputs`, return an Outcome (outputs, events, effects) from `handle`, raise TransientError or
PermanentError. Everything Kafka is the runner's:

    stage.py    Stage, BatchStage, StageContext       records.py  InputRecord, Outcome, Output, Event
    errors.py   how a handler's exception is classed  launch.py   how a stage process starts
    runner.py   the spine: two loops, prepare (decode, handle), finish (effects, produce, commit)
      feed.py     the consumer: batches, fetch-ahead, pause/resume, revokes, commits.py, lag
      codec.py    bytes <-> records            retry.py   the one retry loop
      outbox.py   outcomes and events encoded, undeclared outputs refused, produce and confirm
      dlq.py      the dead letter: envelope, dlq.* headers, its event
    memory.py   an in-memory broker, consumer and producer: the runner under test without Kafka
"""

from processors.runtime.errors import PermanentError, TransientError
from processors.runtime.records import Event, InputRecord, Outcome, Output
from processors.runtime.stage import BatchStage, Stage, StageContext

__all__ = [
    "BatchStage",
    "Event",
    "InputRecord",
    "Outcome",
    "Output",
    "PermanentError",
    "Stage",
    "StageContext",
    "TransientError",
]
