"""How the runtime classifies a handler's exception.

Permanent errors (bad data, a bug on this input) go to the dead-letter topic at once: retrying
cannot help and would block the partition. Everything else is presumed transient (a broker, MinIO
or a backend hiccup) and retried with backoff (processors/backoff.py) up to the stage's attempt
limit, then dead-lettered.
"""

from __future__ import annotations

from schemas.serde import SerdeError


class TransientError(Exception):
    """Worth retrying: a dependency is briefly unavailable."""


class PermanentError(Exception):
    """Retrying cannot help: the message itself is unprocessable."""


class UndeclaredOutput(PermanentError):
    """A handler's outcome names a topic its stage does not declare in `outputs`."""


_PERMANENT = (SerdeError, PermanentError, KeyError, TypeError, ValueError, AttributeError)


def is_permanent(exc: BaseException) -> bool:
    return isinstance(exc, _PERMANENT) and not isinstance(exc, TransientError)
