"""How the runtime classifies a failure: the one rule every stage's errors go through.

classify() names whose fault a failure is:

- DEPENDENCY: something the stage depends on is unavailable (MinIO, ClickHouse, the broker, a
  webhook receiver, a remote API, the schema registry): TransientError, refused or reset
  connections, timeouts, DNS failures, 5xx and 429 answers, and the client libraries' own names
  for those. Never the record's fault: the batch is retried, partitions paused, until it passes.
- RECORD: the message itself cannot be processed (PermanentError, undecodable bytes, a bad value:
  KeyError, TypeError, ValueError, AttributeError, an object it names that is not in storage).
  Retrying cannot help: dead-lettered at once.
- UNKNOWN: anything else (RuntimeError, an unexpected OSError, a bug). Presumed the record's own
  until proven otherwise: retried up to the stage's attempt limit, then dead-lettered.

retry.py decides what a failure leads to from this and from what the rest of the batch did (a
DEPENDENCY error on one record while others succeed is that record's own fault after all).

Explicit classes win: TransientError is a dependency, PermanentError the record, whatever else
an exception also is. An unclassified exception raised `from` a dependency error (a wrapped
outage) is a dependency error. Library exceptions are matched by their qualified class names, so
this module imports none of the libraries (nor the stage packages that define some of them:
the runtime may not import those); tests/unit/test_runtime_parts.py checks that every name
still names a real class.
"""

from __future__ import annotations

import errno
from enum import StrEnum

from confluent_kafka import KafkaError, KafkaException

from processors.kafka_clients import DeliveryFailed, is_record_error
from schemas.serde import SerdeError


class TransientError(Exception):
    """Worth retrying: a dependency is unavailable. Never dead-lettered for that."""


class PermanentError(Exception):
    """Retrying cannot help: the message itself is unprocessable."""


class UndeclaredOutput(PermanentError):
    """A handler's outcome names a topic its stage does not declare in `outputs`."""


class OutputTooLarge(PermanentError):
    """An output encoded for this input is larger than the producer or the broker accepts."""


class OutputRefused(PermanentError):
    """The producer or the broker refused an output of this input for what it is."""


class Fault(StrEnum):
    DEPENDENCY = "dependency"
    RECORD = "record"
    UNKNOWN = "unknown"


_RECORD_TYPES: tuple[type[BaseException], ...] = (
    SerdeError,
    KeyError,
    TypeError,
    ValueError,
    AttributeError,
)

# Library (and stage-package) exceptions that mean a dependency is unavailable, by qualified name.
_DEPENDENCY_NAMES = frozenset(
    {
        # urllib3 (the MinIO SDK's HTTP client): refused, reset, timed out, gave up retrying.
        "urllib3.exceptions.HTTPError",
        # minio: a 5xx or a non-S3 answer (a proxy's error page).
        "minio.error.ServerError",
        "minio.error.InvalidResponseError",
        # aiohttp: connection-level failures (refused, reset, server timeout, cut-off body).
        "aiohttp.client_exceptions.ClientConnectionError",
        "aiohttp.client_exceptions.ClientPayloadError",
        # clickhouse-connect: the server could not be reached.
        "clickhouse_connect.driver.exceptions.OperationalError",
        # http.client: a server that hung up or answered garbage.
        "http.client.HTTPException",
        # Stage packages the runtime may not import.
        "gpu_workers.backends.base.BackendUnavailable",
        "processors.eventlog.reader.EventLogUnavailable",
    }
)
# minio S3Error codes: the service is failing or misconfigured (every record would fail alike).
_S3_DEPENDENCY_CODES = frozenset(
    {
        "InternalError",
        "ServiceUnavailable",
        "SlowDown",
        "RequestTimeout",
        "OperationAborted",
        "XMinioServerNotInitialized",
        "XMinioStorageFull",
        "NoSuchBucket",
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
    }
)
_S3_MISSING_CODES = frozenset({"NoSuchKey", "NoSuchObject", "NotFound"})
# OSError numbers of network trouble that Python raises as a plain OSError.
_NETWORK_ERRNOS = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.ENETDOWN,
        errno.ETIMEDOUT,
        errno.EPIPE,
    }
)
# HTTP statuses that say the server (not the request) is the problem.
_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


def _names(exc: BaseException) -> set[str]:
    return {f"{cls.__module__}.{cls.__qualname__}" for cls in type(exc).__mro__}


def _classify_kafka(exc: BaseException) -> Fault | None:
    if isinstance(exc, DeliveryFailed):
        return Fault.RECORD if exc.per_record else Fault.DEPENDENCY
    if isinstance(exc, KafkaException):
        error = exc.args[0] if exc.args else None
        if isinstance(error, KafkaError) and is_record_error(error.code()):
            return Fault.RECORD
        # The broker or the network: retriable, transport and timeout codes alike.
        return Fault.DEPENDENCY
    return None


def _classify_one(exc: BaseException) -> Fault | None:
    """The fault `exc` names by itself, or None when it says nothing either way."""
    if isinstance(exc, TransientError):
        return Fault.DEPENDENCY
    if isinstance(exc, PermanentError):
        return Fault.RECORD
    kafka = _classify_kafka(exc)
    if kafka is not None:
        return kafka
    names = _names(exc)
    if "minio.error.S3Error" in names:
        code = getattr(exc, "code", "")
        if code in _S3_MISSING_CODES:
            return Fault.RECORD
        return Fault.DEPENDENCY if code in _S3_DEPENDENCY_CODES else None
    if "aiohttp.client_exceptions.ClientResponseError" in names:
        return Fault.DEPENDENCY if getattr(exc, "status", 0) in _RETRY_STATUSES else None
    if names & _DEPENDENCY_NAMES and not isinstance(exc, ValueError):
        return Fault.DEPENDENCY
    if isinstance(exc, ConnectionError | TimeoutError):
        return Fault.DEPENDENCY
    if isinstance(exc, OSError) and (exc.errno in _NETWORK_ERRNOS or type(exc).__module__ == "socket"):
        return Fault.DEPENDENCY  # also socket.gaierror: a name that does not resolve
    if isinstance(exc, _RECORD_TYPES):
        return Fault.RECORD
    return None


def classify(exc: BaseException) -> Fault:
    """Whose fault `exc` is; see the module docstring for the rule."""
    if isinstance(exc, BaseExceptionGroup):
        kinds = [classify(e) for e in exc.exceptions]
        if Fault.DEPENDENCY in kinds:
            return Fault.DEPENDENCY
        return Fault.RECORD if kinds and all(k is Fault.RECORD for k in kinds) else Fault.UNKNOWN
    found = _classify_one(exc)
    if found is not None:
        return found
    # A wrapped outage (raise SomethingError(...) from ConnectionError(...)) is still an outage.
    cause, seen = exc.__cause__, 0
    while cause is not None and seen < 8:
        if _classify_one(cause) is Fault.DEPENDENCY:
            return Fault.DEPENDENCY
        cause, seen = cause.__cause__, seen + 1
    return Fault.UNKNOWN


def is_transient(exc: BaseException) -> bool:
    """A dependency is unavailable: retry (pausing), never dead-letter for it."""
    return classify(exc) is Fault.DEPENDENCY


def is_permanent(exc: BaseException) -> bool:
    """The message itself is at fault: dead-letter at once."""
    return classify(exc) is Fault.RECORD
