"""What the fuzzer sends: random bytes, mutated valid Avro, and valid records padded to the
broker's size limit, each described by a small Case that hypothesis draws.

Hypothesis draws only the description (topic, kind, size, seed, mutations): the bytes are built
from it with random.Random(seed), so a megabyte payload costs hypothesis nothing and a Case
printed in a failure rebuilds the same bytes.

Valid records start from the committed sample of each schema's newest version
(tests/fixtures/avro_samples.py) with a fresh id, so whatever a stage makes of one can be told
apart from the others, and are encoded by the runtime's own codec: the fuzzer follows the wire
format the stages actually read.
"""

from __future__ import annotations

import copy
import random
import string
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from processors.runtime.codec import Codec
from schemas.confluent_serde import memory_serdes
from schemas.serde import SerdeError
from schemas.topics import SCHEMA_OF, Topic, TopicNames
from tests.fixtures.avro_samples import SAMPLES

# Every topic a stage consumes.
INPUT_TOPICS: tuple[Topic, ...] = (
    Topic.CATALOG_EVENTS,
    Topic.JOBS_ACCEPTED,
    Topic.JOBS_REFERENCED,
    Topic.GENERATION_REQUESTS,
    Topic.GENERATION_RESULTS,
    Topic.ASSETS_SCORED,
    Topic.ASSETS_READY,
    Topic.REVIEW_DECISIONS,
    Topic.PIPELINE_EVENTS,
)
# A private address the downloader's policy refuses before connecting: a fuzzed job that gets as
# far as downloading fails at once (an unreachable host would be an outage, retried for minutes).
DEAD_URL = "http://10.255.255.1/fuzz.png"
# Key, headers and the record batch around a value: what the broker's limit also has to hold.
ENVELOPE_BYTES = 1024

OPS = ("flip", "set", "insert", "delete", "truncate", "randomize_tail", "extend")


@dataclass(frozen=True)
class Mutation:
    op: str
    position: int  # taken modulo the payload's length (+1)
    amount: int  # a bit, a byte value, or a length, by op


@dataclass(frozen=True)
class Case:
    topic: Topic
    # "valid": the base record as it is; "random" bytes; "mutated": a valid encoding with bytes
    # changed; "fields": a valid record with values changed to odd ones of the right type (it
    # still decodes: the handlers get it); "tombstone"; "near_limit_valid" and
    # "near_limit_random": at the broker's size limit.
    kind: str
    size: int = 0  # random: the length's bit count (2**(size-1) up to 2**size - 1); near-limit: bytes
    seed: int = 0
    mutations: tuple[Mutation, ...] = ()
    key: bytes | None = None
    headers: tuple[tuple[str, bytes], ...] = ()


def newest_sample(schema: str) -> dict[str, Any]:
    version = max(v for name, v in SAMPLES if name == schema)
    return copy.deepcopy(SAMPLES[(schema, version)])


def valid_record(topic: Topic, ident: str) -> dict[str, Any]:
    """A record that fits the topic's newest schema, carrying `ident` as its id."""
    schema = SCHEMA_OF[topic]
    record = newest_sample(schema)
    if schema == "catalog_event":
        record["event_id"] = ident
        record["product"]["sku"] = f"SKU-{ident}"
        record["references"] = [{"url": DEAD_URL, "role": "PRODUCT", "required": True}]
    elif schema == "job":
        record["job_id"] = ident
        record["event_id"] = f"evt-{ident}"
        record["product"] = {**record["product"], "sku": f"SKU-{ident}"}
        if topic is Topic.JOBS_ACCEPTED:
            record["references"] = []
            record["source_references"] = [{"url": DEAD_URL, "role": "PRODUCT", "required": True}]
    elif schema == "review_decision":
        record["job_id"] = ident
    elif schema == "pipeline_event":
        record["event_id"] = ident
        record["job_id"] = ident
    return record


def _pad(topic: Topic, record: dict[str, Any], text: str) -> None:
    """Put `text` where a person or an upstream system could have put it."""
    schema = SCHEMA_OF[topic]
    if schema in ("catalog_event", "job"):
        record["product"]["title"] = text
    elif schema == "review_decision":
        record["reason"] = text  # the 1 MB review reason of issue 8
    else:
        record["detail"] = text


def _noise(rng: random.Random, n: int) -> str:
    # Letters, not one repeated byte: a compressing producer must not shrink it under the limit.
    return "".join(rng.choices(string.ascii_letters, k=n))


def near_limit_valid(codec: Codec, topic: Topic, ident: str, target: int, seed: int) -> bytes:
    """A valid record of the topic whose encoding is `target` bytes, give or take a few."""
    rng = random.Random(seed)
    record = valid_record(topic, ident)
    _pad(topic, record, "")
    base = len(codec.encode(topic, record))
    text = _noise(rng, max(0, target - base - 4))  # 4: the longer length prefix of the string
    _pad(topic, record, text)
    return codec.encode(topic, record)


def mutate(data: bytes, mutations: tuple[Mutation, ...], rng: random.Random) -> bytes:
    out = bytearray(data)
    for m in mutations:
        at = m.position % (len(out) + 1)
        if m.op == "flip" and out:
            out[at % len(out)] ^= 1 << (m.amount % 8)
        elif m.op == "set" and out:
            out[at % len(out)] = m.amount % 256
        elif m.op == "insert":
            out[at:at] = rng.randbytes(1 + m.amount % 64)
        elif m.op == "delete":
            del out[at : at + 1 + m.amount % 64]
        elif m.op == "truncate":
            del out[at:]
        elif m.op == "randomize_tail":
            out[at:] = rng.randbytes(len(out) - at)
        elif m.op == "extend":
            out += rng.randbytes(1 + m.amount % 4096)
    return bytes(out)


ODD_TEXT = (
    "",
    " ",
    "\x00",
    "../../../etc/passwd",
    "http://169.254.169.254/latest/meta-data/",
    "'; DROP TABLE pipeline_events; --",
    "\u202e\ufeff\U0001f4a9" * 8,
    "%s%n{0}${jndi:ldap://x}",
)
ODD_INTS = (0, -1, 1, 2**31 - 1, -(2**31))
ODD_LONGS = (0, -1, 2**63 - 1, -(2**63))
ODD_FLOATS = (0.0, -0.0, float("nan"), float("inf"), float("-inf"), 1e308)


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(value, dict):
        found = [path] if path else []
        return found + [p for k, v in value.items() for p in _leaves(v, (*path, k))]
    if isinstance(value, list):
        return [path] + [p for i, v in enumerate(value) for p in _leaves(v, (*path, i))]
    return [path]


def _odd_value(value: Any, rng: random.Random) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return rng.choice(ODD_LONGS if abs(value) > 2**31 else ODD_INTS)
    if isinstance(value, float):
        return rng.choice(ODD_FLOATS)
    if isinstance(value, str):
        roll = rng.random()
        return rng.choice(ODD_TEXT) if roll < 0.7 else _noise(rng, rng.choice((300, 5000, 70000)))
    if isinstance(value, list):
        return [] if value and rng.random() < 0.5 else value * rng.choice((2, 50))
    if isinstance(value, dict):
        return {} if rng.random() < 0.3 else {**value, _noise(rng, 8): rng.choice(ODD_TEXT)}
    return None  # a null where one was, or a null where a union allows it


def _replace(record: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    target: Any = record
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value


def _get(record: dict[str, Any], path: tuple[Any, ...]) -> Any:
    target: Any = record
    for step in path:
        target = target[step]
    return target


def odd_fields(codec: Codec, topic: Topic, record: dict[str, Any], rng: random.Random, count: int) -> bytes:
    """`count` values of the record changed to odd ones of their own type (or null), each kept
    only if the record still encodes: what a careless or hostile producer can really send."""
    for _ in range(count):
        path = rng.choice(_leaves(record))
        before = copy.deepcopy(_get(record, path))
        _replace(record, path, _odd_value(before, rng))
        try:
            codec.encode(topic, record)
        except (SerdeError, TypeError, ValueError):
            _replace(record, path, before)
    return codec.encode(topic, record)


def build(case: Case, codec: Codec, ident: str, limit: int) -> bytes | None:
    """The bytes a case stands for (None: a tombstone)."""
    rng = random.Random(case.seed)
    if case.kind == "tombstone":
        return None
    if case.kind == "random":
        low, high = (1 << case.size) >> 1, (1 << case.size) - 1
        return rng.randbytes(min(limit - ENVELOPE_BYTES, rng.randint(low, high)))
    if case.kind == "near_limit_random":
        return rng.randbytes(case.size)
    if case.kind == "near_limit_valid":
        return near_limit_valid(codec, case.topic, ident, case.size, case.seed)
    if case.kind == "valid":
        return codec.encode(case.topic, valid_record(case.topic, ident))
    if case.kind == "mutated":
        return mutate(codec.encode(case.topic, valid_record(case.topic, ident)), case.mutations, rng)
    if case.kind == "fields":
        return odd_fields(codec, case.topic, valid_record(case.topic, ident), rng, 1 + case.size % 4)
    raise ValueError(f"unknown case kind {case.kind!r}")


def baseline_cases() -> list[Case]:
    """Sent to every input topic whatever hypothesis draws: the untouched valid record, an empty
    value and a tombstone."""
    return [Case(topic, kind) for topic in INPUT_TOPICS for kind in ("valid", "random", "tombstone")]


def near_limit_cases(limit: int) -> list[Case]:
    """A handful of cases at the broker's limit: a padded valid record for every input topic
    (decodes, so the stage handles it and builds outputs and letters around a megabyte), and
    random bytes of that size for a few."""
    target = limit - ENVELOPE_BYTES
    cases = [Case(topic, "near_limit_valid", target, seed=i) for i, topic in enumerate(INPUT_TOPICS)]
    cases += [
        Case(topic, "near_limit_random", target, seed=100 + i) for i, topic in enumerate(INPUT_TOPICS[:3])
    ]
    return cases


def cases(limit: int) -> st.SearchStrategy[Case]:
    """Random bytes and mutated valid records of every input topic, 0 bytes up to the limit."""
    below = limit - ENVELOPE_BYTES
    # The size's order of magnitude is drawn (as many cases of a few bytes as of a few hundred
    # kilobytes); build() picks the size within it from the case's seed.
    sizes = st.integers(0, below.bit_length())
    mutations = st.lists(
        st.builds(Mutation, st.sampled_from(OPS), st.integers(0, 1 << 20), st.integers(0, 1 << 16)),
        min_size=1,
        max_size=3,
    ).map(tuple)
    keys = st.one_of(st.none(), st.binary(max_size=40), st.just(b"fuzz"))
    headers = st.lists(st.tuples(st.text(max_size=20), st.binary(max_size=40)), max_size=3).map(tuple)
    topics = st.sampled_from(INPUT_TOPICS)
    seeds = st.integers(0, 2**32 - 1)
    # Mostly changed records (the odd-valued ones get past the decoder, to the handlers), random
    # bytes of every size, and now and then a tombstone.
    kinds = st.sampled_from(("fields",) * 4 + ("mutated",) * 3 + ("random",) * 3 + ("tombstone",))
    return st.builds(_case, kinds, topics, sizes, seeds, mutations, keys, headers)


def _case(
    kind: str,
    topic: Topic,
    size: int,
    seed: int,
    mutations: tuple[Mutation, ...],
    key: bytes | None,
    headers: tuple[tuple[str, bytes], ...],
) -> Case:
    return Case(
        topic,
        kind,
        size if kind in ("random", "fields") else 0,
        seed,
        mutations if kind == "mutated" else (),
        key,
        headers,
    )


def codec_for(prefix: str) -> Codec:
    """The runtime's codec over the in-process registry (no stack needed to draw cases)."""
    return Codec(TopicNames(prefix), memory_serdes(prefix))
