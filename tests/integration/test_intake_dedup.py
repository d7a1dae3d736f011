"""De-duplication with whatever keys upstream uses and any number of intake replicas, product
versions and ordering, through the real broker and real intake processes (`lightbox run intake`):

- two intake processes, null-keyed (and otherwise-keyed) copies of one request spread over every
  partition: exactly one job, the rest re-keyed into the slot partition and recorded there;
- a changed product makes a new version superseding the last, an identical one is a duplicate,
  an older event is stale, a reused event id with other content conflicting; after both processes
  are killed and replaced, the table they restore still says so;
- our producers' keyed partitioning is the slot partition intake computes.
"""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, ConsumerGroupState, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient

from deploy.local.stack import LocalStack
from processors.config import Settings
from processors.intake.slot import slot_partition
from processors.kafka_clients import Outgoing, group_id_for, make_producer, produce_and_confirm
from processors.runtime.codec import Codec
from schemas.topics import Topic, TopicNames
from tests.fixtures.avro_samples import CATALOG_V1

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_750_000_000_000


class Intakes:
    """Intake processes under a topic prefix of their own, and what they wrote."""

    def __init__(self, settings: Settings, log_dir: Path) -> None:
        prefix = f"test-dedup-{uuid.uuid4().hex[:8]}."
        self.settings = settings.model_copy(
            update={"kafka": settings.kafka.model_copy(update={"topic_prefix": prefix})}
        )
        self.names = TopicNames(prefix)
        self.log_dir = log_dir
        self.processes: list[subprocess.Popen[bytes]] = []
        stack = LocalStack(self.settings, progress=lambda _: None)
        stack.ensure_topics()
        stack.ensure_schemas()  # the prefix's subjects: every topic is registry-framed
        self.codec = Codec.of(self.settings)
        self.partitions = self.settings.kafka.partitions

    def start(self, copies: int) -> None:
        env = {
            **os.environ,
            "LIGHTBOX_KAFKA__TOPIC_PREFIX": self.settings.kafka.topic_prefix,
            "LIGHTBOX_HOME": str(self.settings.home),
        }
        for _ in range(copies):
            log = open(self.log_dir / f"intake-{len(self.processes)}.log", "ab")  # noqa: SIM115 - the child's
            self.processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "gateway.cli.main", "run", "intake"],
                    cwd=ROOT,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        self._wait_for_members(copies)

    def _wait_for_members(self, copies: int, timeout_s: float = 90) -> None:
        """Until the group is stable with every copy holding at least one partition."""
        admin = AdminClient({"bootstrap.servers": self.settings.kafka.bootstrap})
        group = group_id_for(self.settings, "intake")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for p in self.processes:
                assert p.poll() is None, f"an intake process died; see {self.log_dir}"
            described = admin.describe_consumer_groups([group])[group].result(timeout=10)
            members = [m for m in described.members if m.assignment.topic_partitions]
            if described.state == ConsumerGroupState.STABLE and len(members) == copies:
                return
            time.sleep(0.5)
        raise AssertionError(f"intake group never had {copies} members with partitions; see {self.log_dir}")

    def kill_all(self) -> None:
        for p in self.processes:
            p.send_signal(signal.SIGKILL)
            p.wait(10)
        self.processes = []

    def stop(self) -> None:
        for p in self.processes:
            p.send_signal(signal.SIGTERM)
        for p in self.processes:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()

    def send(self, *messages: tuple[dict[str, Any], bytes | None, int | None]) -> None:
        """(event, key, partition) each; partition None: the producer's partitioner decides."""
        topic = self.names(Topic.CATALOG_EVENTS)
        produce_and_confirm(
            make_producer(self.settings),
            [
                Outgoing(topic, key, self.codec.serde(Topic.CATALOG_EVENTS).encode(event), None, partition)
                for event, key, partition in messages
            ],
        )

    def read(self, topic: Topic) -> list[dict[str, Any]]:
        """Every record of a topic so far, decoded."""
        serde = self.codec.serde(topic)
        name = self.names(topic)
        consumer = Consumer(
            {
                "bootstrap.servers": self.settings.kafka.bootstrap,
                "group.id": f"t-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                # A stage's outputs end in a transaction's commit marker, never handed over.
                "enable.partition.eof": True,
            }
        )
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(name, p), timeout=10)[1]
            for p in range(self.partitions)
        }
        consumer.assign([TopicPartition(name, p, OFFSET_BEGINNING) for p, end in ends.items() if end > 0])
        left = {p for p, end in ends.items() if end > 0}
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + 30
        while left and time.monotonic() < deadline:
            for m in consumer.consume(500, 0.5):
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        left.discard(m.partition())
                    continue
                out.append(serde.decode(m.value()))
                if m.offset() + 1 >= ends[m.partition()]:
                    left.discard(m.partition())
        consumer.close()
        return out

    def intake_events(self) -> list[dict[str, Any]]:
        return [e for e in self.read(Topic.PIPELINE_EVENTS) if e["stage"] == "intake"]

    def wait_until_decided(self, expected: dict[str, int], timeout_s: float = 90) -> list[dict[str, Any]]:
        """Until each event id has (at least) that many final intake events: pending, duplicate,
        rejected (a reused id is decided twice)."""
        deadline = time.monotonic() + timeout_s
        while True:
            events = self.intake_events()
            decided = Counter(_event_id_of(e) for e in events if e["state"] != "rekeyed")
            missing = {i: n for i, n in expected.items() if decided[i] < n}
            if not missing:
                time.sleep(1.0)  # anything a straggler would add
                return self.intake_events()
            if time.monotonic() > deadline:
                raise AssertionError(f"undecided: {missing}; see {self.log_dir}")
            time.sleep(0.5)


def _event_id_of(e: dict[str, Any]) -> str:
    """Events about an incoming event carry its id as job id; job events name it in attributes."""
    return e["attributes"].get("event_id") or e["job_id"]


def request(event_id: str, sku: str, occurred_at: int = T0, **product: Any) -> dict[str, Any]:
    event = copy.deepcopy(CATALOG_V1)
    event.update(event_id=event_id, occurred_at=occurred_at, event_type="PRODUCT_UPSERT", campaign=None)
    event["request"].update(variants=1, template_version=None)
    event["product"].update(sku=sku, **product)
    return event


@pytest.fixture
def intakes(stack_settings: Settings, tmp_path: Path) -> Iterator[Intakes]:
    running = Intakes(stack_settings, tmp_path)
    yield running
    running.stop()


def test_two_intake_processes_and_null_keys_make_exactly_one_job(intakes: Intakes) -> None:
    intakes.start(copies=2)
    sku = f"SKU-REPL-{uuid.uuid4().hex[:6]}"
    home = slot_partition(sku, intakes.partitions)
    copies = []
    for i in range(6):
        event = request(f"copy-{i}-{sku}", sku)
        if i < 4:  # null keys, on every partition in turn
            copies.append((event, None, i % intakes.partitions))
        else:  # keys that are not the SKU, placed by the producer's partitioner
            copies.append((event, f"upstream-{i}".encode(), None))
    intakes.send(*copies)

    events = intakes.wait_until_decided({e["event_id"]: 1 for e, _, _ in copies})
    jobs = [j for j in intakes.read(Topic.JOBS_ACCEPTED) if j["product"]["sku"] == sku]
    assert len(jobs) == 1, [j["event_id"] for j in jobs]
    states = [e["state"] for e in events]
    assert states.count("pending") == 1 and states.count("duplicate_job") == 5, states
    rekeyed = [e for e in events if e["state"] == "rekeyed"]
    assert rekeyed and {e["attributes"]["to_partition"] for e in rekeyed} == {str(home)}
    assert {e["reason"] for e in rekeyed} <= {"key_not_slot"}
    # Where each copy landed: its partition, or where the producer's partitioner put its key.
    landed = [p if p is not None else slot_partition(k.decode(), intakes.partitions) for _, k, p in copies]
    assert len(rekeyed) == sum(1 for p in landed if p != home), (
        "each copy outside the slot partition moved once"
    )
    workers = {e["worker"] for e in events}
    assert len(workers) == 2, "both processes took part"


def test_versions_and_ordering_hold_across_replicas_and_a_restart(intakes: Intakes) -> None:
    intakes.start(copies=2)
    sku = f"SKU-VER-{uuid.uuid4().hex[:6]}"
    key = sku.encode()
    first = request(f"e1-{sku}", sku, T0)
    intakes.send((first, key, None))
    intakes.wait_until_decided({first["event_id"]: 1})
    steps = [
        (request(f"e2-{sku}", sku, T0 + 1000), key, None),  # identical product, later: duplicate
        (request(f"e3-{sku}", sku, T0 + 2000, title="Mug, now blue"), key, None),  # update: v2
        (request(f"e4-{sku}", sku, T0 + 500, title="An older title"), key, None),  # stale
        (request(f"e1-{sku}", sku, T0, title="Reused id"), key, None),  # conflicting duplicate
        (request(f"e5-{sku}", sku, T0 + 3000, title="Mug, blue, v3"), None, 0),  # null key: v3
    ]
    decisions: Counter[str] = Counter({first["event_id"]: 1})
    for message in steps:  # one after another: their order on the slot partition is the order here
        intakes.send(message)
        decisions[message[0]["event_id"]] += 1
        intakes.wait_until_decided(dict(decisions))
    events = intakes.intake_events()

    def final(event_id: str) -> dict[str, Any]:
        (found,) = [e for e in events if _event_id_of(e) == event_id and e["state"] != "rekeyed"]
        return found

    assert final(f"e2-{sku}")["state"] == "duplicate_job"
    assert (final(f"e4-{sku}")["state"], final(f"e4-{sku}")["reason"]) == ("rejected_event", "stale_event")
    conflicting = [e for e in events if e["job_id"] == f"e1-{sku}" and e["state"] == "rejected_event"]
    assert [e["reason"] for e in conflicting] == ["conflicting_duplicate"]

    jobs = sorted(
        (j for j in intakes.read(Topic.JOBS_ACCEPTED) if j["product"]["sku"] == sku),
        key=lambda j: j["asset_version"],
    )
    assert [j["asset_version"] for j in jobs] == [T0, T0 + 2000, T0 + 3000]
    assert [j["supersedes"] for j in jobs] == [None, jobs[0]["job_id"], jobs[1]["job_id"]]
    assert len({j["job_id"] for j in jobs}) == 3 and len({j["idempotency_key"] for j in jobs}) == 1

    # Both processes die; two new ones restore the table from intake.seen.
    intakes.kill_all()
    intakes.start(copies=2)
    again = request(f"e6-{sku}", sku, T0 + 4000, title="Mug, blue, v3")  # v3's content, later
    late = request(f"e7-{sku}", sku, T0 + 3500, title="Late")
    for message in [(again, None, 1), (late, key, None)]:
        intakes.send(message)
        intakes.wait_until_decided({message[0]["event_id"]: 1})
    events = intakes.intake_events()
    (dup,) = [e for e in events if e["attributes"].get("event_id") == again["event_id"]]
    assert (dup["state"], dup["job_id"]) == ("duplicate_job", jobs[2]["job_id"])
    (stale,) = [e for e in events if e["job_id"] == late["event_id"]]
    assert stale["reason"] == "stale_event"
    assert len([j for j in intakes.read(Topic.JOBS_ACCEPTED) if j["product"]["sku"] == sku]) == 3


def test_our_keyed_producers_already_land_in_the_slot_partition(intakes: Intakes) -> None:
    # The CLI and the gateway key catalog events by SKU with librdkafka's default partitioner.
    topic = intakes.names(Topic.CATALOG_EVENTS)
    producer = make_producer(intakes.settings)
    landed: dict[str, int] = {}

    def report(err: Any, msg: Any) -> None:
        assert err is None
        landed[msg.key().decode()] = msg.partition()

    skus = [f"SKU-P-{i}-{uuid.uuid4().hex[:4]}" for i in range(60)]
    for sku in skus:
        producer.produce(topic, key=sku.encode(), value=b"x", on_delivery=report)
    producer.flush(30)
    assert landed == {sku: slot_partition(sku, intakes.partitions) for sku in skus}
