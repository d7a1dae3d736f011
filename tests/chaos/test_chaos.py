"""The fault-injection suite's CI run: a short seeded plan against a live pipeline.

Two replicas of every stage (the event-log sink once), 12 jobs over 3 rounds; in those rounds
stage processes are SIGKILLed, the sink is killed, MinIO is frozen and stopped and the broker is
killed once, briefly. It all happens on a private stack (own home, ports and data; the tool cache
is shared), so nothing else on the machine is disturbed. Then the checker reads the topics, the
event log and the object store (gateway/harness/chaos/checker.py lists what it proves), all of it:
with exactly-once stage outputs (kafka.exactly_once) a published job has one record on
assets.published however its stages were killed.

`lightbox chaos --long` runs 100 rounds; docs/reliability.md has its figures.
"""

from __future__ import annotations

import os

import pytest

from gateway.harness.chaos import ChaosOptions, format_result, run_chaos
from gateway.harness.chaos.plan import MAJOR
from processors.config import Settings

pytestmark = pytest.mark.integration

CI_SEED = int(os.environ.get("LIGHTBOX_CHAOS_SEED", "1"))


@pytest.mark.timeout(1200)
def test_kills_and_outages_lose_nothing_duplicate_nothing_and_dead_letter_no_outage(
    stack_settings: Settings,
) -> None:
    if os.environ.get("LIGHTBOX_TEST_DOCKER") == "1":
        pytest.skip("the chaos suite breaks local processes; under Docker there are none to break")
    result = run_chaos(stack_settings, ChaosOptions(seed=CI_SEED, rounds=3, jobs=12))
    report = format_result(result)
    print(report)
    # It really broke things: every kind of fault happened, while the jobs ran.
    assert all(result.faults.applied[fault] >= 1 for fault in MAJOR), report
    assert result.faults.kills >= 4, report
    assert result.tally.jobs == 12
    # Every check, published_once included: a stage killed between producing and committing
    # leaves an aborted transaction, never a second record (processors/runtime/transact.py).
    assert result.ok, report
