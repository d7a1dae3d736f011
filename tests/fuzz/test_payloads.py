"""The fuzzer's own payloads, without a broker: what each kind of case really sends."""

from __future__ import annotations

import random

from hypothesis import given, seed
from hypothesis import settings as hypothesis_settings

from schemas.serde import SerdeError
from tests.fuzz.payloads import (
    ENVELOPE_BYTES,
    INPUT_TOPICS,
    Case,
    Mutation,
    build,
    cases,
    codec_for,
    mutate,
    near_limit_cases,
    valid_record,
)

LIMIT = 1_048_588  # Kafka's default message.max.bytes
CODEC = codec_for("fuzz-unit.")


def decodes(case: Case, payload: bytes | None) -> bool:
    try:
        CODEC.serde(case.topic).decode(payload)
    except SerdeError:
        return False
    return True


def test_every_input_topic_has_a_valid_base_record_with_its_own_id() -> None:
    for topic in INPUT_TOPICS:
        payload = CODEC.encode(topic, valid_record(topic, "fuzz-7"))
        value = CODEC.serde(topic).decode(payload)
        assert "fuzz-7" in str(value), topic


def test_near_limit_cases_fill_the_broker_limit_and_the_valid_ones_decode() -> None:
    for case in near_limit_cases(LIMIT):
        payload = build(case, CODEC, "fuzz-1", LIMIT)
        assert payload is not None
        assert LIMIT - ENVELOPE_BYTES - 16 <= len(payload) <= LIMIT - ENVELOPE_BYTES + 16, (
            case.topic,
            len(payload),
        )
        assert decodes(case, payload) == (case.kind == "near_limit_valid")


def test_mutations_change_bytes_as_named() -> None:
    rng = random.Random(1)
    data = bytes(range(10))
    assert mutate(data, (Mutation("truncate", 4, 0),), rng) == data[:4]
    assert mutate(data, (Mutation("flip", 0, 0),), rng)[0] == 1
    assert mutate(data, (Mutation("delete", 2, 0),), rng) == data[:2] + data[3:]
    assert len(mutate(data, (Mutation("extend", 0, 9),), rng)) == 20
    assert mutate(b"", (Mutation("flip", 5, 1), Mutation("set", 0, 7)), rng) == b""


def test_drawn_cases_reach_the_decoder_and_beyond() -> None:
    """Random bytes never decode; odd-valued records nearly always do (the handlers get them)."""
    seen: dict[str, list[bool]] = {}

    @seed(8)
    @hypothesis_settings(max_examples=60, database=None, deadline=None)
    @given(case=cases(LIMIT))
    def draw(case: Case) -> None:
        payload = build(case, CODEC, "fuzz-2", LIMIT)
        assert len(payload or b"") <= LIMIT - ENVELOPE_BYTES
        seen.setdefault(case.kind, []).append(decodes(case, payload))

    draw()
    assert not any(seen.get("random", [])) and not any(seen.get("tombstone", []))
    fields = seen["fields"]
    assert sum(fields) > len(fields) / 2
