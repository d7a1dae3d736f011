"""Intake's de-duplication changelog on the real broker: the table forgets expired entries and
tombstones them (on restore and by sweeping), a restore reports progress and its deadline scales
with the changelog, and intake refuses to start when its input topic and changelog cannot be
co-partitioned (a clear configuration error, not a crash loop on some partitions)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourceType,
)

from deploy.local.stack import LocalStack, topic_configs
from gateway.ops.submit import publish
from processors.config import Settings
from processors.kafka_clients import Outgoing, make_producer, produce_and_confirm
from processors.runtime.codec import Codec
from processors.state.entry import SeenEntry
from processors.state.restore import RestoreTimeout
from processors.state.seen_table import SeenTable
from schemas.topics import Topic, TopicNames
from tests.fixtures.avro_samples import CATALOG_V1

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DAY_S = 86400.0


def prefixed(settings: Settings, **intake: float) -> Settings:
    prefix = f"test-seen-{uuid.uuid4().hex[:8]}."
    settings = settings.model_copy(
        update={
            "kafka": settings.kafka.model_copy(update={"topic_prefix": prefix}),
            "intake": settings.intake.model_copy(update=intake),
        }
    )
    # Every topic is registry-framed: the prefix's subjects must exist before anything is written.
    LocalStack(settings, progress=lambda _: None).ensure_schemas()
    return settings


def create(settings: Settings, topic: Topic, partitions: int, config: dict[str, str] | None = None) -> str:
    name = TopicNames(settings.kafka.topic_prefix)(topic)
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap})
    new = NewTopic(
        name, num_partitions=partitions, replication_factor=1, config=config or topic_configs(topic)
    )
    admin.create_topics([new])[name].result(30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # until every partition has a leader
        topic_md = admin.list_topics(name, timeout=10).topics.get(name)
        ready = topic_md is not None and topic_md.error is None and len(topic_md.partitions) == partitions
        if ready and all(p.leader >= 0 for p in topic_md.partitions.values()):
            return name
        time.sleep(0.2)
    raise AssertionError(f"{name} has no leaders")


def read_changelog(settings: Settings, name: str, partitions: int) -> list[tuple[int, str, bytes | None]]:
    """Every record of the topic, (partition, key, value), read to the end offsets."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap,
            "group.id": f"t-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    ends = {
        p: consumer.get_watermark_offsets(TopicPartition(name, p), timeout=10)[1] for p in range(partitions)
    }
    consumer.assign([TopicPartition(name, p, OFFSET_BEGINNING) for p, end in ends.items() if end > 0])
    records: list[tuple[int, str, bytes | None]] = []
    left = {p for p, end in ends.items() if end > 0}
    deadline = time.monotonic() + 60
    while left and time.monotonic() < deadline:
        for m in consumer.consume(1000, 0.5):
            if m.error():
                continue
            records.append((m.partition(), m.key().decode(), m.value()))
            if m.offset() + 1 >= ends[m.partition()]:
                left.discard(m.partition())
    consumer.close()
    assert not left, f"could not read {name} to its end"
    return records


def write_entries(settings: Settings, name: str, entries: dict[str, SeenEntry]) -> None:
    # Written as the stage's outbox writes entries (and the table reads them): through the codec.
    serde = Codec.of(settings).serde(Topic.INTAKE_SEEN)
    messages = [
        Outgoing(name, key.encode(), serde.encode(e.to_record(key)), None, e.partition)
        for key, e in entries.items()
    ]
    produce_and_confirm(make_producer(settings), messages)


def entry(partition: int, updated_s: float) -> SeenEntry:
    ms = int(updated_s * 1000)
    return SeenEntry(partition, ("job",), "evt", ms, ms, partition, 1, bytes(32), ms)


def test_restore_forgets_expired_entries_and_tombstones_them_on_the_changelog(
    stack_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    settings = prefixed(stack_settings, dedup_ttl_s=30 * DAY_S, restore_progress_s=0.0)
    name = create(settings, Topic.INTAKE_SEEN, 3)
    now = time.time()
    live = {f"event:live-{i}": entry(i % 3, now - DAY_S) for i in range(300)}
    old = {f"event:old-{i}": entry(i % 3, now - 31 * DAY_S) for i in range(200)}
    write_entries(settings, name, {**live, **old})

    table = SeenTable(settings, name)
    table.on_assign([0, 1, 2])
    with caplog.at_level(logging.INFO, logger="processors.state"):
        report = table.restore_if_needed()

    assert report is not None and report.read == 500
    assert report.counts["loaded"] == 300 and report.counts["expired"] == 200
    assert len(table) == 300 and all(table.get(k) is not None for k in live)
    tombstoned = {(p, k) for p, k, v in read_changelog(settings, name, 3) if v is None}
    assert tombstoned == {(e.partition, k) for k, e in old.items()}, (
        "one tombstone per expired key, in its partition"
    )
    lines = [r.getMessage() for r in caplog.records]
    assert any("records/s" in line and "% of the end offsets" in line for line in lines), lines
    assert any(
        line.startswith(f"restored {name} partitions [0, 1, 2]: 300 entries now in memory") for line in lines
    )

    # A second owner restores what is left: the tombstoned keys are gone for it too.
    again = SeenTable(settings, name)
    again.on_assign([0, 1, 2])
    report = again.restore_if_needed()
    assert report is not None and len(again) == 300
    assert report.counts["deleted"] == 200 and report.counts["expired"] == 200


def test_a_running_table_sweeps_expired_entries_out_of_memory_and_the_changelog(
    stack_settings: Settings,
) -> None:
    settings = prefixed(stack_settings, dedup_ttl_s=60.0, sweep_interval_s=1.0)
    name = create(settings, Topic.INTAKE_SEEN, 3)
    clock_now = [time.time()]
    table = SeenTable(settings, name, clock=lambda: clock_now[0])
    table.on_assign([0, 1, 2])
    table.restore_if_needed()
    written = {"event:a": entry(0, clock_now[0]), "slot:b": entry(2, clock_now[0] + 30)}
    for key, e in written.items():
        table.put(key, e)
    write_entries(settings, name, written)

    clock_now[0] += 75  # a is past its 60 s, b is not
    assert table.sweep_if_due() == 1
    assert table.get("event:a") is None and table.get("slot:b") is not None
    records = read_changelog(settings, name, 3)
    assert (0, "event:a", None) in records
    assert not [r for r in records if r[1] == "slot:b" and r[2] is None]


def test_a_restore_past_its_scaled_deadline_fails_loudly(stack_settings: Settings) -> None:
    settings = prefixed(stack_settings, restore_floor_s=0.0, restore_per_record_s=1e-9)
    name = create(settings, Topic.INTAKE_SEEN, 1)
    write_entries(settings, name, {f"event:{i}": entry(0, time.time()) for i in range(20_000)})
    table = SeenTable(settings, name)
    table.on_assign([0])
    with pytest.raises(RestoreTimeout, match="of 20000 records"):
        table.restore_if_needed()


def _run_intake(settings: Settings, timeout_s: float = 90) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "LIGHTBOX_KAFKA__TOPIC_PREFIX": settings.kafka.topic_prefix,
        "LIGHTBOX_HOME": str(settings.home),
    }
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli.main", "run", "intake"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def _alter(settings: Settings, name: str, config: dict[str, str]) -> None:
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap})
    entries = [ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in config.items()]
    resource = ConfigResource(ResourceType.TOPIC, name, incremental_configs=entries)
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(30)


def _nothing_consumed(settings: Settings) -> None:
    events = TopicNames(settings.kafka.topic_prefix)(Topic.PIPELINE_EVENTS)
    assert read_changelog(settings, events, settings.kafka.partitions) == [], "intake handled nothing"


@pytest.mark.parametrize(
    ("seen_partitions", "seen_config", "message"),
    [
        (2, None, "has 3 partitions but its changelog"),
        (3, {"cleanup.policy": "delete"}, "cleanup.policy=delete: it must be compact"),
    ],
    ids=["partition-counts-differ", "changelog-not-compacted"],
)
def test_intake_refuses_to_start_on_topics_that_cannot_hold_its_table(
    stack_settings: Settings, seen_partitions: int, seen_config: dict[str, str] | None, message: str
) -> None:
    settings = prefixed(stack_settings)
    assert settings.kafka.partitions == 3
    create(settings, Topic.CATALOG_EVENTS, 3)
    seen = create(settings, Topic.INTAKE_SEEN, seen_partitions)
    LocalStack(settings, progress=lambda _: None).ensure_topics()  # the rest, as the stack makes them
    if seen_config:  # after ensure_topics, which gives the changelog its compaction back
        _alter(settings, seen, seen_config)
    event = {**CATALOG_V1, "event_id": f"evt-{uuid.uuid4().hex[:6]}"}
    event["request"] = {**CATALOG_V1["request"], "variants": 1, "template_version": None}
    event["campaign"] = None
    publish(settings, [(1, event, Codec.of(settings).serde(Topic.CATALOG_EVENTS).encode(event))])

    started = time.monotonic()
    result = _run_intake(settings)
    assert result.returncode != 0
    assert time.monotonic() - started < 60, "stopped at start"
    output = result.stdout + result.stderr
    assert "configuration error, intake does not start" in output and message in output, output[-3000:]
    assert seen in output
    _nothing_consumed(settings)
