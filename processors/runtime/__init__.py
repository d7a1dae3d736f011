"""The stage runtime: consume, decode, process, produce, commit, retry, dead-letter, emit events."""

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
