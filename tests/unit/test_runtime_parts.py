"""The runtime's pure parts: error classification, the retry rule, backoff, dead-letter headers,
topic names, config."""

from __future__ import annotations

import errno
import importlib
import socket
from typing import Any

import aiohttp
import pytest
import urllib3.exceptions
from confluent_kafka import KafkaError, KafkaException
from minio.error import S3Error, ServerError

from processors.backoff import backoff_delay
from processors.config import load_settings
from processors.kafka_clients import DeliveryFailed
from processors.runtime.dlq import DeadLetter, parse_headers
from processors.runtime.errors import (
    _DEPENDENCY_NAMES,
    Fault,
    PermanentError,
    TransientError,
    classify,
    is_permanent,
    is_transient,
)
from processors.runtime.records import Outcome, job_event
from processors.runtime.retry import RetryPolicy, Tried, settle
from schemas.serde import AvroSerde, SerdeError
from schemas.topics import SCHEMA_OF, Topic, TopicNames
from tests.fixtures.avro_samples import JOB_V1


def test_classification() -> None:
    assert is_permanent(SerdeError("x"))
    assert is_permanent(PermanentError("x"))
    assert is_permanent(KeyError("field"))
    assert not is_permanent(TransientError("x"))
    assert not is_permanent(ConnectionError("x"))
    assert not is_permanent(TimeoutError())


def _s3(code: str) -> S3Error:
    return S3Error(None, code, "msg", "res", "req", "host")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "error",
    [
        TransientError("x"),
        ConnectionRefusedError("refused"),
        ConnectionResetError("reset"),
        TimeoutError("slow"),
        TimeoutError(),
        socket.gaierror(-2, "Name or service not known"),
        OSError(errno.EHOSTUNREACH, "No route to host"),
        urllib3.exceptions.MaxRetryError(None, "/", "gave up"),  # type: ignore[arg-type]
        urllib3.exceptions.ProtocolError("connection aborted"),
        ServerError("503", 503),
        _s3("SlowDown"),
        _s3("ServiceUnavailable"),
        _s3("NoSuchBucket"),
        aiohttp.ClientConnectionError("refused"),
        aiohttp.ServerTimeoutError("slow"),
        aiohttp.ClientResponseError(None, (), status=503),  # type: ignore[arg-type]
        aiohttp.ClientResponseError(None, (), status=429),  # type: ignore[arg-type]
        KafkaException(KafkaError(KafkaError._TRANSPORT, "broker down")),
        KafkaException(KafkaError(KafkaError._MSG_TIMED_OUT, "timed out")),
        DeliveryFailed("timed out", [KafkaError(KafkaError._MSG_TIMED_OUT)]),
        DeliveryFailed("still undelivered"),
        ExceptionGroup("both", [ValueError("x"), ConnectionError("y")]),
    ],
    ids=lambda e: type(e).__name__,
)
def test_dependency_errors_are_outages(error: BaseException) -> None:
    assert classify(error) is Fault.DEPENDENCY and is_transient(error)


@pytest.mark.parametrize(
    "error",
    [
        PermanentError("bad"),
        SerdeError("garbage"),
        ValueError("bad value"),
        _s3("NoSuchKey"),
        KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "too large")),
        DeliveryFailed("too large", [KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)]),
        urllib3.exceptions.LocationParseError("not a url"),  # a ValueError as well
    ],
    ids=lambda e: type(e).__name__,
)
def test_record_faults_are_permanent(error: BaseException) -> None:
    assert classify(error) is Fault.RECORD


def test_explicit_classes_win_and_wrapped_outages_stay_outages() -> None:
    class Both(TransientError, ValueError):
        pass

    assert classify(Both("x")) is Fault.DEPENDENCY
    assert classify(RuntimeError("out of memory")) is Fault.UNKNOWN
    assert classify(_s3("SomethingNew")) is Fault.UNKNOWN
    assert classify(aiohttp.ClientResponseError(None, (), status=404)) is Fault.UNKNOWN  # type: ignore[arg-type]
    try:
        try:
            raise ConnectionError("minio refused")
        except ConnectionError as cause:
            raise RuntimeError("upload failed") from cause
    except RuntimeError as wrapped:
        assert classify(wrapped) is Fault.DEPENDENCY
    # A permanent error stays one, whatever caused it.
    assert classify(PermanentError("bad").with_traceback(None)) is Fault.RECORD


def test_every_dependency_name_names_a_real_class() -> None:
    """The classification matches library classes by name: a rename must fail here, not silently."""
    for name in sorted(_DEPENDENCY_NAMES):
        module, _, qualname = name.rpartition(".")
        found: Any = importlib.import_module(module)
        for part in qualname.split("."):
            found = getattr(found, part)
        assert isinstance(found, type) and issubclass(found, BaseException), name
        assert f"{found.__module__}.{found.__qualname__}" == name, name


def _round(outcomes: dict[str, list[BaseException | None]]) -> Any:
    async def run_round(items: list[str]) -> list[Tried[str]]:
        results = []
        for item in items:
            error = outcomes[item].pop(0) if len(outcomes[item]) > 1 else outcomes[item][0]
            results.append(Tried(error=error) if error else Tried(value=item))
        return results

    return run_round


class _Quiet:
    def __init__(self) -> None:
        self.outages: list[int] = []
        self.retried: list[tuple[str, int]] = []

    async def outage(self, round_: int, failing: list[tuple[str, BaseException]], delay: float) -> None:
        self.outages.append(round_)

    def retrying(self, item: str, error: BaseException, attempt: int, delay: float) -> None:
        self.retried.append((item, attempt))

    async def wait(self, delay: float) -> None:
        return None

    async def discard(self, value: str) -> None:
        return None


async def test_the_retry_rule_in_rounds() -> None:
    policy = RetryPolicy(max_attempts=3, initial_s=0, max_s=0)
    down = ConnectionError("down")
    # a works; b keeps failing on a dependency while a (the witness) works: b's own fault.
    watch = _Quiet()
    results = await settle(["a", "b"], _round({"a": [None], "b": [down]}), policy, watch)
    assert results[0].value == "a" and results[1].error is down and results[1].attempts == 3
    assert watch.retried == [("b", 1), ("b", 2)] and watch.outages == []
    # Everything failing on a dependency: never given up on, and nothing counted.
    watch = _Quiet()
    results = await settle(
        ["a", "b"], _round({"a": [down] * 9 + [None], "b": [down] * 9 + [None]}), policy, watch
    )
    assert [r.value for r in results] == ["a", "b"] and watch.outages == list(range(1, 10))
    # An unknown error is counted even alone; a permanent one ends at once.
    watch = _Quiet()
    results = await settle(
        ["a", "b"], _round({"a": [RuntimeError("bug")], "b": [KeyError("k")]}), policy, watch
    )
    assert (results[0].attempts, results[0].fault) == (3, Fault.UNKNOWN)
    assert (results[1].attempts, results[1].fault) == (1, Fault.RECORD)


def test_backoff_grows_and_is_capped() -> None:
    delays = [backoff_delay(n, 0.2, 1.0) for n in range(1, 6)]
    assert delays == [0.2, 0.4, 0.8, 1.0, 1.0]


def test_dead_letter_headers_round_trip() -> None:
    letter = DeadLetter("t", 2, 9, b"k", b"v", "quality", "ValueError", "bad", 3, 10, 20)
    headers = parse_headers(letter.headers())
    assert headers == {
        "original.topic": "t",
        "original.partition": "2",
        "original.offset": "9",
        "original.key": "k",
        "stage": "quality",
        "error.class": "ValueError",
        "error.message": "bad",
        "attempts": "3",
        "first.failure.ms": "10",
        "last.failure.ms": "20",
        "fault": "record",
    }
    assert (
        AvroSerde("dlq_envelope").decode(AvroSerde("dlq_envelope").encode(letter.record()))["attempts"] == 3
    )


def test_topic_prefix_round_trips_and_every_topic_has_a_schema() -> None:
    names = TopicNames("staging.")
    assert names(Topic.JOBS_ACCEPTED) == "staging.jobs.accepted"
    assert names.logical("staging.pipeline.dlq") is Topic.PIPELINE_DLQ
    with pytest.raises(KeyError):
        names.logical("prod.pipeline.dlq")
    assert set(SCHEMA_OF) == set(Topic)


def test_outcome_helpers_record_state_and_reason() -> None:
    forward = Outcome.forward(Topic.JOBS_REFERENCED, dict(JOB_V1), "running", stored="1")
    assert forward.outputs[0].key == "job-1"
    assert forward.events[0].state == "running" and forward.events[0].attributes == {"stored": "1"}
    failed = Outcome.fail(dict(JOB_V1), "missing_source_file", "404")
    assert not failed.outputs and failed.events[0].reason == "missing_source_file"
    assert job_event(dict(JOB_V1), "pending").submitted_at == JOB_V1["submitted_at"]


def test_settings_from_env_and_yaml(tmp_path, monkeypatch) -> None:
    config = tmp_path / "lightbox.yaml"
    config.write_text("kafka:\n  topic_prefix: prod.\nreview:\n  policy: hold\n")
    monkeypatch.setenv("LIGHTBOX_KAFKA__PARTITIONS", "12")
    settings = load_settings(config)
    assert settings.kafka.topic_prefix == "prod."
    assert settings.kafka.partitions == 12
    assert settings.review.policy == "hold"
    assert settings.clickhouse_dsn.startswith("chdb://")
    monkeypatch.setenv("LIGHTBOX_CLICKHOUSE__URL", "http://ch:8123")
    assert load_settings(config).clickhouse_dsn == "http://ch:8123"


def test_a_missing_config_file_is_a_clear_error(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("LIGHTBOX_CONFIG", raising=False)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_settings(tmp_path / "missing.yaml")
