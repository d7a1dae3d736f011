"""Whose fault a failed insert is: ClickHouse's (an outage: wait and retry) or a row's (refused:
dead-letter that row), or not known from the error alone (the sink finds out by splitting).

The rule leans towards "outage": waiting on an error that was really a row's costs time, and the
sink's split then proves it was the row; dead-lettering good rows because of an outage loses them
from the event log.
"""

from __future__ import annotations

import enum
import struct

from clickhouse_connect.driver.exceptions import DatabaseError, DataError, OperationalError


class Fault(enum.Enum):
    OUTAGE = "outage"  # the engine or the server cannot take inserts now
    DATA = "data"  # the rows sent are what ClickHouse (or the client encoding them) refused
    UNKNOWN = "unknown"


# ClickHouse error codes (src/Common/ErrorCodes.cpp) that are about the values sent.
DATA_ERROR_CODES = frozenset({
    6,  # CANNOT_PARSE_TEXT
    25,  # CANNOT_PARSE_ESCAPE_SEQUENCE
    26,  # CANNOT_PARSE_QUOTED_STRING
    27,  # CANNOT_PARSE_INPUT_ASSERTION_FAILED
    38,  # CANNOT_PARSE_DATE
    41,  # CANNOT_PARSE_DATETIME
    53,  # TYPE_MISMATCH
    69,  # ARGUMENT_OUT_OF_BOUND
    70,  # CANNOT_CONVERT_TYPE
    72,  # CANNOT_PARSE_NUMBER
    117,  # INCORRECT_DATA
    128,  # TOO_LARGE_ARRAY_SIZE
    130,  # CANNOT_READ_ARRAY_FROM_TEXT
    131,  # TOO_LARGE_STRING_SIZE
    321,  # VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
    349,  # CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN
    407,  # DECIMAL_OVERFLOW
    469,  # VIOLATED_CONSTRAINT
})  # fmt: skip

# Raised by the client while it encodes the rows (a number out of a column's range, a string
# where a timestamp goes, a column missing), before anything reaches the engine.
CLIENT_DATA_ERRORS: tuple[type[BaseException], ...] = (
    DataError,
    ValueError,
    TypeError,
    OverflowError,
    KeyError,
    struct.error,
)

# Cannot reach or use the engine: refused or dropped connections, timeouts, a stream cut off.
OUTAGE_ERRORS: tuple[type[BaseException], ...] = (OperationalError, ConnectionError, TimeoutError, OSError)


def classify(exc: BaseException) -> Fault:
    if isinstance(exc, OUTAGE_ERRORS):
        return Fault.OUTAGE
    if isinstance(exc, DatabaseError) and not isinstance(exc, DataError):
        code = getattr(exc, "code", None)
        if code in DATA_ERROR_CODES:
            return Fault.DATA
        # Any other server code (unknown table after a restart, memory, too many parts, disk,
        # network, readonly replica) is the engine's state, not the rows'.
        return Fault.OUTAGE if code is not None else Fault.UNKNOWN
    if isinstance(exc, CLIENT_DATA_ERRORS):
        return Fault.DATA
    return Fault.UNKNOWN
