"""The stage runtime: consume, decode, process, produce, commit, retry, dead-letter, emit events.

What a stage author uses is exported here: subclass Stage (or BatchStage), declare `inputs` and
`outputs`, return an Outcome (outputs, events, effects) from `handle`, raise TransientError or
PermanentError. Everything Kafka is the runner's:

    stage.py    Stage, BatchStage, StageContext       records.py  InputRecord, Outcome, Output, Event
    errors.py   whose fault a failure is (dependency, record, unknown): the one rule for every stage
    launch.py   how a stage process starts
    runner.py   the spine: two loops, prepare (decode, handle), finish (effects, produce, commit)
      feed.py     the consumer: batches, fetch-ahead, holds (pause, keep polling, resume),
                  revokes, offset gaps, commits.py, lag
      codec.py    bytes <-> records
      retry.py    the one retry loop, and how an outage is told from a record's own fault
      outage.py   holding the partitions while a dependency is down; retry events, bounded
      outbox.py   outcomes and events encoded and size-checked, undeclared outputs refused
      sizes.py    message size limits (producer and broker) and bounded event texts
      delivery.py produce and confirm; refused records dead-letter their input; broker outages
                  are waited out
      dlq.py      the dead letter: envelope, dlq.* headers, offloaded original, its event
    memory.py   an in-memory broker, consumer, producer and store: the runner under test without
                Kafka or MinIO
"""

from processors.runtime.errors import Fault, PermanentError, TransientError, classify, is_transient
from processors.runtime.records import Event, InputRecord, Outcome, Output
from processors.runtime.stage import BatchStage, Stage, StageContext

__all__ = [
    "BatchStage",
    "Event",
    "Fault",
    "InputRecord",
    "Outcome",
    "Output",
    "PermanentError",
    "Stage",
    "StageContext",
    "TransientError",
    "classify",
    "is_transient",
]
