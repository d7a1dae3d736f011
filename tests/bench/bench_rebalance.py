"""How long a stage's consumer group takes to settle when a copy joins and when one leaves, with
the classic group protocol and with KIP-848's consumer protocol, on the real broker.

    python -m tests.bench.bench_rebalance [--partitions 6] [--members 2] [--rounds 5]

A fresh topic of P partitions; M consumers made with the stages' own configuration
(processors/kafka_clients.consumer_config, kafka.group_protocol set per run) join one group, each
polling on its own thread like a stage's poll thread. Then, per round: one more copy joins (the
clock runs from its subscribe() until every partition is owned by exactly one member and the
newcomer owns its share, floor(P / (M + 1))), and that copy leaves by close() (the clock runs
until the remaining members own every partition again). Printed: the median and the worst of the
rounds for each protocol, and the ratio consumer / classic. The topic is deleted afterwards.
Needs the stack (`lightbox stack up`); the broker's group.consumer.heartbeat.interval.ms (set by
the local stack from stage.session_timeout_ms) bounds how soon a KIP-848 member hears of a change.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, NewTopic

from processors.config import Settings, load_settings
from processors.kafka_clients import consumer_config

SETTLE_TIMEOUT_S = 120.0


class Member(threading.Thread):
    """One group member polling on its own thread; its assignment as of its last poll."""

    def __init__(self, settings: Settings, group: str, topic: str) -> None:
        super().__init__(daemon=True)
        self.consumer = Consumer(consumer_config(settings, group))
        self.topic = topic
        self.owned: frozenset[int] = frozenset()
        self.joined_at = 0.0
        self._stop_event = threading.Event()
        self.closed = threading.Event()

    def run(self) -> None:
        self.joined_at = time.monotonic()
        self.consumer.subscribe([self.topic])
        while not self._stop_event.is_set():
            self.consumer.poll(0.02)
            self.owned = frozenset(tp.partition for tp in self.consumer.assignment())
        self.consumer.close()
        self.owned = frozenset()
        self.closed.set()

    def leave(self) -> None:
        self._stop_event.set()


def _settled(members: list[Member], partitions: int, newcomer: Member | None) -> bool:
    seen: list[int] = [p for m in members for p in m.owned]
    if sorted(seen) != list(range(partitions)):
        return False  # a partition unowned, or owned twice (a revoke not heard yet)
    return newcomer is None or len(newcomer.owned) >= partitions // len(members)


def _wait(check: Callable[[], bool]) -> float:
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > SETTLE_TIMEOUT_S:
            raise TimeoutError(f"the group did not settle in {SETTLE_TIMEOUT_S:.0f}s")
        time.sleep(0.005)
    return time.monotonic() - started


def measure(
    base: Settings, protocol: str, topic: str, partitions: int, members: int, rounds: int
) -> dict[str, list[float]]:
    settings = base.model_copy(update={"kafka": base.kafka.model_copy(update={"group_protocol": protocol})})
    group = f"bench-rebalance-{protocol}-{uuid.uuid4().hex[:6]}"
    steady = [Member(settings, group, topic) for _ in range(members)]
    for member in steady:
        member.start()
    _wait(lambda: _settled(steady, partitions, None))
    times: dict[str, list[float]] = {"join": [], "leave": []}
    try:
        for _ in range(rounds):
            newcomer = Member(settings, group, topic)
            everyone = [*steady, newcomer]
            started = time.monotonic()
            newcomer.start()
            _wait(lambda everyone=everyone, newcomer=newcomer: _settled(everyone, partitions, newcomer))
            times["join"].append(time.monotonic() - started)
            time.sleep(1.0)  # steady state before the leave
            started = time.monotonic()
            newcomer.leave()
            _wait(lambda newcomer=newcomer: newcomer.closed.is_set() and _settled(steady, partitions, None))
            times["leave"].append(time.monotonic() - started)
            time.sleep(1.0)
    finally:
        for member in steady:
            member.leave()
        for member in steady:
            member.closed.wait(30)
    return times


def _summary(values: list[float]) -> str:
    return f"median {statistics.median(values):6.2f} s, worst {max(values):6.2f} s"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--members", type=int, default=2, help="copies in the group before one joins")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    settings = load_settings()
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap})
    topic = f"bench-rebalance-{uuid.uuid4().hex[:8]}"
    admin.create_topics([NewTopic(topic, num_partitions=args.partitions, replication_factor=1)])[
        topic
    ].result(30)
    time.sleep(2)  # leaders elected
    results: dict[str, dict[str, list[float]]] = {}
    try:
        for protocol in ("classic", "consumer"):
            results[protocol] = measure(settings, protocol, topic, args.partitions, args.members, args.rounds)
    finally:
        admin.delete_topics([topic])
    print(
        f"rebalance: {args.partitions} partitions, {args.members} -> {args.members + 1} -> {args.members} "
        f"members, {args.rounds} rounds, broker {settings.kafka.bootstrap} "
        f"(kafka.version {settings.kafka.version})"
    )
    for protocol, times in results.items():
        for what in ("join", "leave"):
            print(f"  {protocol:8s} {what:5s}: {_summary(times[what])}")
    for what in ("join", "leave"):
        ratio = statistics.median(results["consumer"][what]) / statistics.median(results["classic"][what])
        print(f"  {what}: consumer / classic = {ratio:.2f} (median)")
    return results


if __name__ == "__main__":
    main()
