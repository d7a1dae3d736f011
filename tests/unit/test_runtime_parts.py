"""The runtime's pure parts: error classification, backoff, dead-letter headers, topic names, config."""

from __future__ import annotations

import pytest

from processors.backoff import backoff_delay
from processors.config import load_settings
from processors.runtime.dlq import DeadLetter, parse_headers
from processors.runtime.errors import PermanentError, TransientError, is_permanent
from processors.runtime.records import Outcome, job_event
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
