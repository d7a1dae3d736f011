"""The chaos schedule: what breaks, when and for how long, decided by the seed before anything runs.

Every random choice is drawn here from one random.Random(seed), so a seed names one schedule: a
failure seen once can be rerun exactly (the timing of the processes themselves still varies). The
runner only carries the plan out.

A round submits its share of the jobs, then applies its actions one after another, each after a
random pause, while the jobs are in flight: stage kills (SIGKILL of one replica) and "major"
faults (the event-log sink killed, MinIO frozen or stopped, the broker killed). The first major
faults cover every kind once, in a seed-chosen order, so even a three-round run meets each of
them; the rest are drawn by weight. The broker is the one fault every user of a shared stack
feels, so a plan can cap its kills (`max_broker_kills`; the CI profile allows one, a short one).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum


class Fault(StrEnum):
    KILL_STAGE = "kill_stage"  # SIGKILL one replica of one stage
    KILL_SINK = "kill_sink"  # SIGKILL the event-log sink (the singleton)
    FREEZE_STORAGE = "freeze_storage"  # SIGSTOP MinIO, SIGCONT after the duration
    RESTART_STORAGE = "restart_storage"  # stop MinIO, start it again after the duration
    KILL_BROKER = "kill_broker"  # SIGKILL Kafka, start it again after the duration


KILLS: frozenset[Fault] = frozenset({Fault.KILL_STAGE, Fault.KILL_SINK})
OUTAGES: frozenset[Fault] = frozenset({Fault.FREEZE_STORAGE, Fault.RESTART_STORAGE, Fault.KILL_BROKER})
MAJOR: tuple[Fault, ...] = (Fault.KILL_SINK, Fault.FREEZE_STORAGE, Fault.RESTART_STORAGE, Fault.KILL_BROKER)
# Weights of the majors drawn after the first of each kind: the broker least, it costs the most.
MAJOR_WEIGHTS: dict[Fault, float] = {
    Fault.KILL_SINK: 0.3,
    Fault.FREEZE_STORAGE: 0.3,
    Fault.RESTART_STORAGE: 0.25,
    Fault.KILL_BROKER: 0.15,
}


@dataclass(frozen=True)
class Profile:
    """The knobs that separate a CI run from a long one."""

    max_broker_kills: int | None  # None: no cap
    broker_down_s: tuple[float, float]
    storage_down_s: tuple[float, float]
    freeze_s: tuple[float, float]
    kills_per_round: tuple[int, int]
    pause_s: tuple[float, float]  # before each action, while the jobs run


CI = Profile(
    max_broker_kills=1,
    broker_down_s=(2.0, 2.0),
    storage_down_s=(1.5, 3.0),
    freeze_s=(2.0, 4.0),
    kills_per_round=(2, 3),
    pause_s=(0.3, 2.0),
)
LONG = Profile(
    max_broker_kills=None,
    broker_down_s=(2.0, 8.0),
    storage_down_s=(1.0, 6.0),
    freeze_s=(1.5, 8.0),
    kills_per_round=(1, 3),
    pause_s=(0.3, 3.0),
)


@dataclass(frozen=True)
class Action:
    after_s: float  # pause before acting, while the pipeline runs
    fault: Fault
    stage: str = ""  # KILL_STAGE and KILL_SINK: the stage whose process is killed
    replica: int = 0
    duration_s: float = 0.0  # outages: how long the dependency stays down or frozen

    def describe(self) -> str:
        if self.fault in KILLS:
            return f"{self.fault} {self.stage}#{self.replica}"
        return f"{self.fault} for {self.duration_s:.1f} s"


@dataclass(frozen=True)
class Round:
    index: int
    jobs: int  # submitted when the round starts
    actions: tuple[Action, ...]


def job_shares(jobs: int, rounds: int) -> list[int]:
    """Jobs per round, as even as possible, the earlier rounds taking the remainder."""
    base, extra = divmod(jobs, rounds)
    return [base + (1 if i < extra else 0) for i in range(rounds)]


def _majors(rng: random.Random, rounds: int, profile: Profile) -> list[Fault]:
    """One major fault per round at least, every kind at least once (broker cap allowing)."""
    cap = profile.max_broker_kills
    coverage = [f for f in MAJOR if f is not Fault.KILL_BROKER or cap is None or cap > 0]
    rng.shuffle(coverage)
    majors = list(coverage)
    broker_kills = majors.count(Fault.KILL_BROKER)
    while len(majors) < rounds:
        kinds = [f for f in MAJOR if f is not Fault.KILL_BROKER or cap is None or broker_kills < cap]
        fault = rng.choices(kinds, weights=[MAJOR_WEIGHTS[f] for f in kinds])[0]
        broker_kills += fault is Fault.KILL_BROKER
        majors.append(fault)
    return majors


def _major_action(rng: random.Random, fault: Fault, profile: Profile, sink: str) -> Action:
    pause = rng.uniform(*profile.pause_s)
    if fault is Fault.KILL_SINK:
        return Action(pause, fault, stage=sink)
    span = {
        Fault.FREEZE_STORAGE: profile.freeze_s,
        Fault.RESTART_STORAGE: profile.storage_down_s,
        Fault.KILL_BROKER: profile.broker_down_s,
    }[fault]
    return Action(pause, fault, duration_s=round(rng.uniform(*span), 2))


def make_plan(
    seed: int,
    rounds: int,
    jobs: int,
    stages: list[str],
    sink: str,
    replicas: int,
    profile: Profile,
) -> tuple[Round, ...]:
    """The whole schedule. `stages` are the replicated stages whose processes may be killed;
    `sink` is the singleton event-log stage."""
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, not {rounds}")
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, not {jobs}")
    rng = random.Random(seed)
    majors = _majors(rng, rounds, profile)
    by_round: list[list[Fault]] = [[] for _ in range(rounds)]
    for i, fault in enumerate(majors):
        by_round[i % rounds].append(fault)
    plan = []
    for index, share in enumerate(job_shares(jobs, rounds)):
        actions = [
            Action(
                rng.uniform(*profile.pause_s),
                Fault.KILL_STAGE,
                stage=rng.choice(stages),
                replica=rng.randrange(replicas),
            )
            for _ in range(rng.randint(*profile.kills_per_round))
        ]
        actions += [_major_action(rng, fault, profile, sink) for fault in by_round[index]]
        rng.shuffle(actions)
        plan.append(Round(index, share, tuple(actions)))
    return tuple(plan)
