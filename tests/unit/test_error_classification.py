"""The one rule for storage failures (processors/storage.classify_storage_error): an outage is
transient, a missing object or a request storage refuses is the message's own fault, anything
else is not a storage matter. The real failures (a frozen MinIO, a refused connection, a missing
key) are in tests/integration/test_error_classification.py."""

from __future__ import annotations

import pytest
import urllib3
from minio.error import S3Error, ServerError
from PIL import UnidentifiedImageError

from processors.runtime.errors import is_permanent
from processors.storage import (
    ContentMismatch,
    ObjectMissing,
    StorageRefused,
    StorageUnavailable,
    classify_storage_error,
    storage_errors,
)


def _s3(code: str) -> S3Error:
    return S3Error(None, code, "message", "/bucket/key", "rid", "hid", "bucket", "key")  # type: ignore[arg-type]


@pytest.mark.parametrize("code", ["NoSuchKey", "NoSuchObject", "NotFound"])
def test_a_missing_object_is_the_messages_fault(code: str) -> None:
    classified = classify_storage_error(_s3(code))
    assert isinstance(classified, ObjectMissing) and classified.reason == "missing_source_file"
    assert "bucket/key" in str(classified)
    assert is_permanent(classified)


def test_a_request_storage_refuses_is_the_messages_fault() -> None:
    classified = classify_storage_error(_s3("InvalidObjectName"))
    assert isinstance(classified, StorageRefused) and is_permanent(classified)


@pytest.mark.parametrize(
    "error",
    [
        _s3("SlowDown"),
        _s3("InternalError"),
        _s3("NoSuchBucket"),
        _s3("AccessDenied"),
        _s3("XMinioServerNotInitialized"),
        ServerError("bad gateway", 502),
        urllib3.exceptions.MaxRetryError(None, "/k", urllib3.exceptions.NewConnectionError(None, "refused")),  # type: ignore[arg-type]
        urllib3.exceptions.ReadTimeoutError(None, "/k", "read timed out"),  # type: ignore[arg-type]
        ConnectionRefusedError(111, "refused"),
        TimeoutError(),
    ],
)
def test_an_outage_is_transient(error: Exception) -> None:
    classified = classify_storage_error(error)
    assert isinstance(classified, StorageUnavailable), error
    assert classified.reason == "storage_unavailable" and not is_permanent(classified)


def test_what_is_not_about_storage_is_left_alone() -> None:
    for error in (ValueError("bad steps"), KeyError("route"), UnidentifiedImageError("not an image")):
        assert classify_storage_error(error) is None
    already = ContentMismatch("changed")
    assert classify_storage_error(already) is already
    # ReferenceImages says "missing" with FileNotFoundError.
    assert isinstance(classify_storage_error(FileNotFoundError("refs/x is missing")), ObjectMissing)


def test_storage_errors_raises_the_classified_error_from_the_sdks() -> None:
    original = _s3("NoSuchKey")
    with pytest.raises(ObjectMissing) as raised, storage_errors():
        raise original
    assert raised.value.__cause__ is original
    with pytest.raises(ValueError, match="bad steps"), storage_errors():
        raise ValueError("bad steps")
