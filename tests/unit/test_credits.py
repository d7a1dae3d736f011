"""Credits without a broker: which account a request is charged to, intake's reservation and its
over_budget rejection, the outbox settling a job's reservation on its terminal event, and intake
learning a release back. The same on the real stack: tests/integration/test_credits.py."""

from __future__ import annotations

import copy
import time
from typing import Any

import pytest

from processors.config import CreditAccount, CreditSettings, load_settings
from processors.credits import account_for, job_cost
from processors.intake.settlements import Settled, SettlementReader, settled_of
from processors.intake.slot import account_partition
from processors.job_states import JobState
from processors.runtime.codec import Codec
from processors.runtime.memory import MemoryBroker, MemoryConsumer, MemoryProducer
from processors.runtime.outbox import with_settlements
from processors.runtime.records import Event, InputRecord, Outcome, job_event
from processors.runtime.stage import StageContext
from processors.stages.intake import IntakeStage
from processors.state.layout import ChangelogLayout
from schemas.topics import Topic
from tests.fixtures.avro_samples import CATALOG_V1

PARTITIONS = 3
LAYOUT = ChangelogLayout("catalog.events", "intake.seen", PARTITIONS)
CREDITS = CreditSettings(
    accounts={
        "autumn-team": CreditAccount(budget=3, campaigns=["autumn"]),
        "pim-team": CreditAccount(budget=100, sources=["pim"]),
    },
    default_job_cost=1.0,
    template_costs={"studio-hero": 1.5},
)
HOME = account_partition("autumn-team", PARTITIONS)


def event(n: int, **changes: Any) -> dict[str, Any]:
    value = copy.deepcopy(CATALOG_V1)
    value["request"].update(variants=1, template_version=None, channels=["web"])
    value.update(event_id=f"evt-{n}", campaign="autumn", source="elsewhere")
    value["product"]["sku"] = f"SKU-{n}"
    value.update(changes)
    return value


def catalog(value: dict[str, Any], offset: int, partition: int = HOME) -> InputRecord:
    return InputRecord(Topic.CATALOG_EVENTS, partition, offset, None, value, b"", [], 0)


def settlement(job_id: str, state: str, account: str = "autumn-team", amount: float = 1.5) -> list[Settled]:
    """What the settlement reader hands intake for one pipeline event."""
    value = {"job_id": job_id, "state": state, "attributes": {"account": account, "amount": repr(amount)}}
    found = settled_of(value, PARTITIONS, 1)
    return [] if found is None else [found]


@pytest.fixture
async def stage(monkeypatch: pytest.MonkeyPatch) -> IntakeStage:
    settings = load_settings().model_copy(update={"credits": CREDITS})
    # No broker here: the reader's thread is tests/integration/test_credits.py's.
    monkeypatch.setattr(IntakeStage, "_settlement_reader", lambda self: None)
    s = IntakeStage(StageContext(settings, "intake"), LAYOUT)
    await s.start()
    s.partitions_assigned(Topic.CATALOG_EVENTS, list(range(PARTITIONS)))
    return s


def jobs(outcome: Outcome) -> list[dict[str, Any]]:
    return [o.value for o in outcome.outputs if o.topic is Topic.JOBS_ACCEPTED]


def test_a_campaign_account_wins_over_a_source_account_and_unmatched_requests_are_free() -> None:
    assert account_for(CREDITS, {"campaign": "autumn", "source": "pim"}) == ("autumn-team", "campaign")
    assert account_for(CREDITS, {"campaign": "spring", "source": "pim"}) == ("pim-team", "source")
    assert account_for(CREDITS, {"campaign": None, "source": "other"}) is None
    assert job_cost(CREDITS, {"spec": {"template_id": "studio-hero"}}) == 1.5
    assert job_cost(CREDITS, {"spec": {"template_id": "other"}}) == 1.0


async def test_a_budgeted_request_is_decided_in_its_accounts_partition(stage: IntakeStage) -> None:
    elsewhere = (HOME + 1) % PARTITIONS
    outcome = await stage.handle(catalog(event(1), 1, partition=elsewhere))
    (moved,) = outcome.outputs
    assert (moved.topic, moved.partition) == (Topic.CATALOG_EVENTS, HOME)
    assert outcome.events[0].reason == "partition_not_account"
    assert outcome.events[0].attributes["account"] == "autumn-team"


async def test_intake_reserves_then_rejects_over_budget_with_the_figures(stage: IntakeStage) -> None:
    first = await stage.handle(catalog(event(1), 1))
    (job,) = jobs(first)
    assert job["credits"] == {"account": "autumn-team", "amount": 1.5}
    (reserved,) = [e for e in first.events if e.state == JobState.CREDIT_RESERVED]
    assert reserved.attributes["committed"] == "1.5"
    assert any(o.key == f"credit:{job['job_id']}" and o.partition == HOME for o in first.outputs)

    second = await stage.handle(catalog(event(2), 2))
    assert len(jobs(second)) == 1  # 3.0 of 3: fits exactly

    third = await stage.handle(catalog(event(3), 3))
    assert jobs(third) == []
    (rejected,) = third.events
    assert (rejected.state, rejected.reason) == ("rejected_event", "over_budget")
    assert rejected.attributes["field"] == "campaign"
    assert {k: rejected.attributes[k] for k in ("account", "budget", "committed", "cost")} == {
        "account": "autumn-team",
        "budget": "3.0",
        "committed": "3.0",
        "cost": "1.5",
    }
    assert not any(o.topic is Topic.INTAKE_SEEN for o in third.outputs), "a rejection writes nothing"


async def test_a_redelivered_request_is_not_charged_twice(stage: IntakeStage) -> None:
    await stage.handle(catalog(event(1), 1))
    again = await stage.handle(catalog(event(1), 1))  # the same message, redelivered
    assert len(jobs(again)) == 1
    assert stage.budgets.ledger.committed("autumn-team") == 1.5


async def test_a_release_read_back_frees_budget_and_a_consumption_does_not(stage: IntakeStage) -> None:
    (a,) = jobs(await stage.handle(catalog(event(1), 1)))
    (b,) = jobs(await stage.handle(catalog(event(2), 2)))
    assert jobs(await stage.handle(catalog(event(3), 3))) == []

    consumed = settlement(a["job_id"], "credit_consumed")
    assert [s.entry.partition for s in consumed] == [HOME], "written to the account's partition"
    assert stage.budgets.apply(consumed) == 1
    assert stage.budgets.ledger.committed("autumn-team") == 3.0
    assert stage.budgets.apply(settlement(b["job_id"], "credit_released")) == 1
    assert stage.budgets.ledger.committed("autumn-team") == 1.5
    # A redelivered release changes nothing; a release after consumption neither.
    assert stage.budgets.apply(settlement(b["job_id"], "credit_released")) == 0
    assert stage.budgets.apply(settlement(a["job_id"], "credit_released")) == 0
    assert stage.budgets.ledger.committed("autumn-team") == 1.5
    assert settlement(a["job_id"], "published") == [], "only settlements are read back"

    assert len(jobs(await stage.handle(catalog(event(4), 4)))) == 1, "the release made room"


async def test_the_ledger_is_rebuilt_from_the_table_it_lives_in(stage: IntakeStage) -> None:
    (a,) = jobs(await stage.handle(catalog(event(1), 1)))
    await stage.handle(catalog(event(2), 2))
    stage.budgets.apply(settlement(a["job_id"], "credit_released"))
    stage.budgets.ledger.rebuild([])
    assert stage.budgets.ledger.committed("autumn-team") == 0
    stage.budgets.rebuild(stage._credit_entries())
    assert stage.budgets.ledger.committed("autumn-team") == 1.5


def test_the_outbox_settles_a_reservation_on_the_jobs_terminal_event_only() -> None:
    job = {"job_id": "j1", "attempt": 0, "submitted_at": 1, "credits": {"account": "acct", "amount": 2.0}}
    cases = {
        "published": ("credit_consumed", "published"),
        "failed": ("credit_released", "missing_reference"),
        "rejected": ("credit_released", "rejected"),
    }
    for state, (settled, reason) in cases.items():
        given = job_event(job, state, reason="missing_reference" if state == "failed" else "")
        out = with_settlements([given], None)
        assert [e.state for e in out] == [state, settled]
        assert out[1].reason == reason
        assert out[1].attributes == {"account": "acct", "amount": "2.0", "settles": state}
    for state in ("pending", "completed", "in_review", "retry"):
        assert [e.state for e in with_settlements([job_event(job, state)], None)] == [state]
    assert len(with_settlements([job_event({**job, "credits": None}, "published")], None)) == 1
    replayed = {**job, "job_id": "j1-replay", "replay_of": "j1"}
    assert len(with_settlements([job_event(replayed, "published")], None)) == 1, "a replay settles nothing"


def test_a_dead_letter_releases_the_reservation_its_input_job_carries() -> None:
    job = {"job_id": "j2", "credits": {"account": "acct", "amount": 1.0}}
    record = InputRecord(Topic.GENERATION_REQUESTS, 0, 5, b"j2", job, b"", [], 0)
    letter = Event("j2", "dead_lettered", reason="ValueError")
    out = with_settlements([letter], record)
    assert [(e.state, e.reason) for e in out] == [
        ("dead_lettered", "ValueError"),
        ("credit_released", "ValueError"),
    ]


def test_the_settlement_reader_writes_the_entry_then_queues_then_commits() -> None:
    """Against the in-memory broker: a settlement among other events becomes the job's ledger
    entry in its account's changelog partition (retried while the broker refuses it), is queued
    for intake, and only then are the offsets committed."""
    settings = load_settings()
    settings = settings.model_copy(
        update={"stage": settings.stage.model_copy(update={"backoff_initial_s": 0.01, "backoff_max_s": 0.02})}
    )
    broker = MemoryBroker(default_partitions=PARTITIONS)
    producer = MemoryProducer(broker)
    reader = SettlementReader(
        settings,
        PARTITIONS,
        lambda: 5,
        consumer_factory=lambda: MemoryConsumer(broker, "lightbox.intake.credits"),
        producer=producer,
    )
    serde = Codec.of(settings).serde(Topic.PIPELINE_EVENTS)
    base = {
        "event_id": "e",
        "stage": "publish",
        "at": 1,
        "duration_ms": 0.0,
        "reason": "",
        "detail": "",
        "attempt": 0,
        "submitted_at": None,
        "worker": "w",
    }
    released = {"account": "autumn-team", "amount": "1.5", "settles": "failed"}
    for job_id, state, attributes in [
        ("j1", "published", {}),
        ("j1", "credit_released", released),
    ]:
        value = {**base, "job_id": job_id, "state": state, "attributes": attributes}
        broker.append(reader.events_topic, serde.encode(value), job_id, partition=0)
    broker.create_topic(reader.changelog_topic, PARTITIONS)
    producer.fail_next(reader.changelog_topic)  # refused once: retried, not committed meanwhile

    reader.start()
    try:
        deadline = time.monotonic() + 10
        taken: list[Settled] = []
        while not taken and time.monotonic() < deadline:
            taken = reader.take()
            time.sleep(0.01)
    finally:
        reader.stop()
    (settled,) = taken
    assert (settled.job_id, settled.state) == ("j1", "released")
    (entry,) = broker.messages(reader.changelog_topic)
    assert (entry.key(), entry.partition()) == (b"credit:j1", HOME)
    assert len(producer.failed) == 1, "the refused write was tried again"
    assert broker.committed_offset("lightbox.intake.credits", reader.events_topic, 0) == 2
    assert len(broker.commits) == 1, "committed once, after the entry was written"
