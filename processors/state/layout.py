"""The start-up check that a stage's input topic and its changelog can be co-partitioned.

A changelog is written to the partition number of the input record that made each entry, and the
consumer owning input partition P restores changelog partition P. That holds only while both
topics have the same number of partitions; with fewer changelog partitions some writes fail (the
stage crash-loops on just those partitions), with more or after a change of count the entries of
one key end up where nobody restores them. And a changelog that is not compacted loses entries to
retention, long before they expire. So a stage checks all of this once, at start, and refuses to
run with a :class:`ChangelogLayoutError` naming the topics and what to do.

A broker that cannot be reached is an outage, not a configuration error: the check waits it out
(capped backoff, each wait logged) instead of letting the process exit, and fails fast only once
the broker answers with topics that are wrong.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from processors.backoff import backoff_delay
from processors.runtime.errors import is_transient

# Waits between attempts while the broker is unreachable: 1 s, 2 s, ... then every 30 s.
RETRY_INITIAL_S = 1.0
RETRY_MAX_S = 30.0

_log = logging.getLogger("lightbox.state.layout")


class ChangelogLayoutError(RuntimeError):
    """A configuration error: the topics as they are cannot hold the stage's state correctly.
    Restarting cannot fix it; an operator must (see the message)."""


@dataclass(frozen=True)
class ChangelogLayout:
    input_topic: str
    changelog_topic: str
    partitions: int


def check_layout(
    bootstrap: str,
    input_topic: str,
    changelog_topic: str,
    timeout_s: float = 15.0,
    *,
    connect: Callable[[str], Any] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    log: logging.Logger | None = None,
) -> ChangelogLayout:
    """The layout, once both topics exist with the same partition count and the changelog is
    compacted; ChangelogLayoutError otherwise. While the broker cannot be reached (transport
    failure, timeout) it retries with capped backoff until it answers. `connect` makes the admin
    client from the bootstrap servers (tests pass a fake)."""
    make_admin = connect or _admin
    logger = log or _log
    attempt = 0
    while True:
        try:
            counts, policy = _describe(make_admin(bootstrap), input_topic, changelog_topic, timeout_s)
            break
        except Exception as exc:
            if not is_transient(exc):
                raise
            attempt += 1
            delay = backoff_delay(attempt, RETRY_INITIAL_S, RETRY_MAX_S)
            logger.warning(
                "broker %s unreachable while checking %s and %s (attempt %d), retrying in %.0fs: %s",
                bootstrap,
                input_topic,
                changelog_topic,
                attempt,
                delay,
                exc,
            )
            sleep(delay)
    return _judge(bootstrap, input_topic, changelog_topic, counts, policy)


def _judge(
    bootstrap: str, input_topic: str, changelog_topic: str, counts: dict[str, int], policy: str
) -> ChangelogLayout:
    for name in (input_topic, changelog_topic):
        if name not in counts:
            raise ChangelogLayoutError(
                f"topic {name} does not exist on {bootstrap}: create the pipeline's topics first "
                "(`lightbox stack up`, or the deploy's topic manifests)"
            )
    if counts[input_topic] != counts[changelog_topic]:
        raise ChangelogLayoutError(
            f"{input_topic} has {counts[input_topic]} partitions but its changelog {changelog_topic} "
            f"has {counts[changelog_topic]}: they must be equal (the consumer of input partition P "
            f"restores changelog partition P). Give {changelog_topic} {counts[input_topic]} "
            "partitions (a new, empty changelog forgets what was seen), or migrate it; do not start "
            "the stage until they match"
        )
    if "compact" not in policy.split(","):
        raise ChangelogLayoutError(
            f"changelog {changelog_topic} has cleanup.policy={policy}: it must be compact, or "
            f"retention deletes entries before they expire (kafka-configs --alter --entity-type "
            f"topics --entity-name {changelog_topic} --add-config cleanup.policy=compact)"
        )
    return ChangelogLayout(input_topic, changelog_topic, counts[input_topic])


def _admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap})


def _describe(
    admin: Any, input_topic: str, changelog_topic: str, timeout_s: float
) -> tuple[dict[str, int], str]:
    """Partition counts of the topics that exist, and the changelog's cleanup.policy. The admin
    client lives only in here (the caller passes a fresh one and keeps no reference): an error
    raised while a frame still held it would keep it alive into interpreter shutdown, where
    destroying a librdkafka handle can hang the exit."""
    metadata = admin.list_topics(timeout=timeout_s)
    counts: dict[str, int] = {}
    for name in (input_topic, changelog_topic):
        topic = metadata.topics.get(name)
        if topic is not None and topic.error is None and topic.partitions:
            counts[name] = len(topic.partitions)
    policy = _cleanup_policy(admin, changelog_topic, timeout_s) if changelog_topic in counts else ""
    return counts, policy


def _cleanup_policy(admin: Any, topic: str, timeout_s: float) -> str:
    resource = ConfigResource(ResourceType.TOPIC, topic)
    (future,) = admin.describe_configs([resource], request_timeout=timeout_s).values()
    configs = future.result(timeout=timeout_s)
    entry = configs.get("cleanup.policy")
    return str(entry.value) if entry is not None and entry.value is not None else "delete"
