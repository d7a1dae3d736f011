"""The one retry loop: a batch's records are tried in rounds until each has succeeded or is
dead-lettered for a fault of its own, waiting by the backoff rule (processors/backoff.py) between
rounds. Stage (each record on its own, concurrently) and BatchStage (the batch in one call) alike.

How a dependency outage is told from a record's own fault
---------------------------------------------------------
errors.classify() names each failure DEPENDENCY, RECORD or UNKNOWN. What a failure then leads to
depends on what the rest of the round did:

1. RECORD (a permanent error): dead-lettered at once, whatever else happened.
2. A round in which nothing succeeded and something failed with a DEPENDENCY error is an outage
   round. Nothing of it counts against any record, nothing is dead-lettered and nothing is
   committed: the runner pauses its partitions (staying in the group) and the same records are
   tried again, with capped backoff, for as long as it takes. UNKNOWN failures of such a round
   are not counted either (a dependency that is down can fail in unexpected ways).
3. In any other round the failures count: a DEPENDENCY error on a record while another record of
   the round succeeded is that record's own fault after all (the dependency evidently works), and
   so is an UNKNOWN error. After `max_attempts` counted failures the record is dead-lettered.
4. A witness keeps rule 3 honest once the records that succeeded are done: when a record still to
   be retried has failed with a DEPENDENCY error before, one record of the batch that already
   succeeded is tried again beside it (handlers are idempotent: at-least-once redoes any of them
   anyway; the witness's new result is dropped, its first one stands). Witness succeeds, record
   fails: counted. Both fail: an outage round. So a dependency that goes down in the middle of a
   batch (the first records done, the rest failing) never dead-letters the rest, and a record that
   keeps failing while the others work is dead-lettered after max_attempts tries. An outage
   round clears the counts: only failures since the last outage add up (the rounds on its edges,
   where some calls got through and some did not, are no evidence).
5. A batch handler's own give-up (Outcome.dead_letter) is final, like a permanent error, unless
   its error is a DEPENDENCY one in an outage round: then the whole batch is retried.

What cannot be told apart: a record whose own fault looks like an outage (a DEPENDENCY error that
only it meets) in a batch where no record ever succeeded. It is treated as an outage, the safe
side: the stage keeps retrying and says so (`retry` events, lightbox_partitions_held) rather than
dead-letter records because a dependency was down.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from processors.backoff import backoff_delay
from processors.config import StageSettings
from processors.runtime.errors import Fault, classify
from processors.runtime.records import now_ms

K = TypeVar("K")
T = TypeVar("T")


class StopRequested(Exception):
    """The stage is stopping while a batch waits on an outage: it is left uncommitted (whoever
    owns the partitions next redoes it)."""


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    initial_s: float
    max_s: float

    @classmethod
    def of(cls, settings: StageSettings) -> RetryPolicy:
        return cls(settings.max_attempts, settings.backoff_initial_s, settings.backoff_max_s)

    def delay(self, attempt: int) -> float:
        return backoff_delay(attempt, self.initial_s, self.max_s)


@dataclass
class Tried(Generic[T]):
    """One record's result in one round."""

    value: T | None = None
    error: BaseException | None = None
    # The handler gave up on the record itself (a batch handler's Outcome.dead_letter).
    gave_up: bool = False
    duration_ms: float = 0.0


@dataclass
class Settled(Generic[T]):
    """How one record ended: a value, or an error to dead-letter it with (and, when the handler
    gave up on it itself, the value it returned with that error)."""

    value: T | None
    error: BaseException | None
    attempts: int
    fault: Fault | None
    first_failure_ms: int | None
    last_failure_ms: int | None
    duration_ms: float


class Watcher(Protocol[K, T]):
    """What the loop tells its caller (the runner: pause, events, metrics)."""

    async def outage(self, round_: int, failing: list[tuple[K, BaseException]], delay: float) -> None:
        """An outage round: nothing counted; hold the partitions and say so."""

    def retrying(self, item: K, error: BaseException, attempt: int, delay: float) -> None:
        """A counted failure that will be retried."""

    async def wait(self, delay: float) -> None:
        """Sleep between rounds; raises StopRequested when the stage stops meanwhile."""

    async def discard(self, value: T) -> None:
        """A result not kept (a witness's, or a give-up undone by an outage)."""


RoundFn = Callable[[list[K]], Awaitable[list[Tried[T]]]]


@dataclass
class _Record:
    tries: int = 0
    counted: int = 0
    dependency_failed: bool = False
    first_failure_ms: int | None = None
    last_failure_ms: int | None = None


async def settle(
    items: Sequence[K], run_round: RoundFn[K, T], policy: RetryPolicy, watcher: Watcher[K, T]
) -> list[Settled[T]]:
    """Every item tried in rounds by the rule above; one Settled per item, in order."""
    state = [_Record() for _ in items]
    settled: list[Settled[T] | None] = [None] * len(items)
    succeeded: list[int] = []
    unresolved = list(range(len(items)))
    outage_rounds = 0
    while unresolved:
        witness = succeeded[0] if succeeded and any(state[i].dependency_failed for i in unresolved) else None
        subset = sorted(unresolved + ([witness] if witness is not None else []))
        tried = dict(zip(subset, await run_round([items[i] for i in subset]), strict=True))

        witness_ok = witness_down = False
        if witness is not None:
            seen = tried.pop(witness)
            witness_ok = seen.error is None
            witness_down = seen.error is not None and classify(seen.error) is Fault.DEPENDENCY
            if seen.value is not None:
                await watcher.discard(seen.value)

        now = now_ms()
        kinds = {i: classify(t.error) for i, t in tried.items() if t.error is not None}
        witnessed = witness_ok or any(t.error is None for t in tried.values())
        outage = not witnessed and (witness_down or Fault.DEPENDENCY in kinds.values())

        waiting: list[tuple[int, BaseException]] = []
        for i, t in tried.items():
            record = state[i]
            record.tries += 1
            if t.error is None:
                settled[i] = Settled(t.value, None, record.tries, None, None, None, t.duration_ms)
                succeeded.append(i)
                continue
            kind = kinds[i]
            record.first_failure_ms = record.first_failure_ms or now
            record.last_failure_ms = now
            record.dependency_failed |= kind is Fault.DEPENDENCY
            final = kind is Fault.RECORD or (t.gave_up and (kind is not Fault.DEPENDENCY or not outage))
            if not final and not outage:
                record.counted += 1
                final = record.counted >= policy.max_attempts
            if final:
                settled[i] = Settled(
                    t.value if t.gave_up else None,
                    t.error,
                    record.tries,
                    kind,
                    record.first_failure_ms,
                    record.last_failure_ms,
                    t.duration_ms,
                )
                continue
            if t.value is not None:
                await watcher.discard(t.value)
            waiting.append((i, t.error))

        unresolved = [i for i in unresolved if settled[i] is None]
        if not unresolved:
            break
        if outage:
            # Failures counted before the outage do not add up with those after it: the rounds on
            # either edge of an outage (some calls got through, some did not) are no evidence.
            for i in unresolved:
                state[i].counted = 0
            outage_rounds += 1
            delay = policy.delay(outage_rounds)
            await watcher.outage(outage_rounds, [(items[i], e) for i, e in waiting], delay)
        else:
            outage_rounds = 0
            delay = policy.delay(max(state[i].counted for i, _ in waiting))
            for i, error in waiting:
                watcher.retrying(items[i], error, state[i].counted, delay)
        await watcher.wait(delay)
    return [s for s in settled if s is not None]


def elapsed_ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000
