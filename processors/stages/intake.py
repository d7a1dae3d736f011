"""intake: catalog.events → jobs.accepted.

Validates each event (schema, meaning, policy), brings it to its product's slot partition (an
event that arrived elsewhere, whatever its key, is republished there keyed by SKU: `rekeyed`),
and there decides it against a table that survives restarts and forgets after a while: a reused
event id (duplicate, or conflicting if its content differs), an event older than what its slots
already accepted (stale), and per slot a duplicate, a new slot or a new version of the slot's
asset (processors/intake/dedup.py). New work fans out into one job per asset type × channel ×
locale. A rejection is a pipeline event with a machine-readable reason and the offending field.
A budgeted request (a credit account covers its campaign or source) is decided in its account's
partition instead, where its jobs' cost is reserved or the request rejected `over_budget`
(processors/intake/budget.py); a thread reads the settlements back from pipeline.events, and
before each batch what failed jobs released is free again (processors/intake/settlements.py).
docs/intake.md has the rules; the start-up check of the topics is processors/state/layout.py.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, ClassVar

from processors.intake import IntakePolicy, fan_out, validate_event
from processors.intake.budget import Budgets, Charge, OverBudget
from processors.intake.content import occurred_ms
from processors.intake.dedup import Plan, plan_event
from processors.intake.ledger import CREDIT_PREFIX
from processors.intake.settlements import SettlementReader
from processors.intake.slot import slot_partition
from processors.prompting import TemplateStore
from processors.runtime import Event, InputRecord, Outcome, Output, Stage, StageContext
from processors.runtime.records import job_event
from processors.state.layout import ChangelogLayout, ChangelogLayoutError, check_layout
from processors.state.seen_table import SeenTable
from schemas.topics import Topic


class IntakeStage(Stage):
    name: ClassVar[str] = "intake"
    # The credit settlements are read back from pipeline.events outside this group
    # (processors/intake/settlements.py), so catalog partitions stay balanced across replicas.
    inputs: ClassVar[tuple[Topic, ...]] = (Topic.CATALOG_EVENTS,)
    # catalog.events too: an event outside its slot partition is republished into it.
    outputs: ClassVar[tuple[Topic, ...]] = (Topic.JOBS_ACCEPTED, Topic.INTAKE_SEEN, Topic.CATALOG_EVENTS)
    # One at a time: two events of one slot in a batch must be decided in offset order.
    concurrency: ClassVar[int] = 1

    def __init__(self, ctx: StageContext, layout: ChangelogLayout | None = None) -> None:
        """layout: the topics' partitioning when already known (tests). Else it is checked here,
        before the runner makes its consumer: topics that cannot hold the table stop intake
        before it joins its group, so no partition is ever handled with a table that is wrong. A
        broker that is down meanwhile is waited for (an outage must not stop intake for good)."""
        super().__init__(ctx)
        self.layout = layout if layout is not None else self._checked_layout()
        # The catalog (= changelog) partitions this consumer holds, and whether that changed
        # since the ledger's index was last built. Written on the poll thread, read by handle.
        self._owned: set[int] = set()
        self._ledger_stale = True

    def _checked_layout(self) -> ChangelogLayout:
        try:
            return check_layout(
                self.ctx.settings.kafka.bootstrap,
                self.ctx.topics(Topic.CATALOG_EVENTS),
                self.ctx.topics(Topic.INTAKE_SEEN),
                log=self.ctx.log,
            )
        except ChangelogLayoutError as exc:
            self.ctx.log.error("configuration error, intake does not start: %s", exc)
            raise

    async def start(self) -> None:
        self.policy = IntakePolicy.load()
        self.templates = TemplateStore()
        self.seen = SeenTable(self.ctx.settings, self.ctx.topics(Topic.INTAKE_SEEN))
        self.budgets = Budgets(
            self.ctx.settings.credits, self.layout.partitions, self.seen.put, self._owned.__contains__
        )
        self.settlements = self._settlement_reader()
        if self.settlements is not None:
            self.settlements.start()

    def _settlement_reader(self) -> SettlementReader | None:
        """None when no account is configured: nothing to settle, no consumer to run."""
        if not self.ctx.settings.credits.accounts:
            return None
        return SettlementReader(self.ctx.settings, self.layout.partitions, self.seen.now_ms)

    async def stop(self) -> None:
        if self.settlements is not None:
            await asyncio.to_thread(self.settlements.stop)

    def partitions_assigned(self, topic: Topic, partitions: list[int]) -> None:
        if topic is Topic.CATALOG_EVENTS:
            self._owned.update(partitions)
            self.seen.on_assign(partitions)

    def partitions_revoked(self, topic: Topic, partitions: list[int]) -> None:
        """Rebalance hook for revoked partitions (the runtime calls it on its poll thread)."""
        if topic is Topic.CATALOG_EVENTS:
            self._owned.difference_update(partitions)
            self._ledger_stale = True
            self.seen.on_revoke(partitions)

    async def before_batch(self) -> None:
        restored = await self.run_blocking(self.seen.restore_if_needed)
        swept = await self.run_blocking(self.seen.sweep_if_due)
        if restored is not None or swept or self._ledger_stale:
            self._ledger_stale = False
            self.budgets.rebuild(self._credit_entries())
        if self.settlements is not None:
            self.budgets.apply(self.settlements.take())

    def _credit_entries(self) -> list[tuple[str, Any]]:
        # The table has no listing of its own; the ledger's index is rebuilt from its entries.
        return [(k, e) for k, e in self.seen._entries.items() if k.startswith(CREDIT_PREFIX)]

    async def handle(self, record: InputRecord) -> Outcome:
        event = record.value
        event_id = str(event.get("event_id", ""))
        # The store is the catalogue: an unknown template and an unknown pinned version are both
        # rejected here, so fan_out's version lookup below always succeeds.
        rejections = validate_event(
            event, self.policy, self.templates, self.ctx.settings.webhooks.allowed_hosts
        )
        if rejections:
            first = rejections[0]
            all_reasons = ";".join(f"{r.reason}@{r.field}" for r in rejections)
            return self._rejected(event, first.reason, first.field, first.detail, all_reasons)
        sku = str(event["product"]["sku"])
        charge = self.budgets.charged(event)
        home = self.budgets.home(charge) if charge else slot_partition(sku, self.layout.partitions)
        if record.partition != home:
            return self._rekeyed(record, sku, home, charge)

        accepted_at = int(time.time() * 1000)
        jobs = fan_out(event, accepted_at, self.templates.resolve_version)
        plan = plan_event(
            self.seen,
            event,
            jobs,
            partition=record.partition,
            offset=record.offset,
            now_ms=self.seen.now_ms(),
        )
        if plan.verdict != "accepted":
            return self._refused(event, plan)
        if charge is not None:
            over = self.budgets.fit(plan, charge)
            if over is not None:
                return self._over_budget(event, over)
        outcome = self._accepted(record, event_id, sku, plan)
        if charge is not None:
            outputs, events = self.budgets.reserve(plan, record, self.seen.now_ms())
            outcome.outputs.extend(outputs)
            outcome.events.extend(events)
        return outcome

    # -- outcomes ------------------------------------------------------------------------------

    def _rekeyed(self, record: InputRecord, sku: str, home: int, charge: Charge | None = None) -> Outcome:
        event = record.value
        key = record.key.decode("utf-8", "replace") if record.key is not None else None
        why = "key_not_slot" if key != sku else "partition_not_slot"
        if charge is not None:
            why = "partition_not_account"  # budgeted: decided where its account's ledger is
        return Outcome(
            outputs=[Output(Topic.CATALOG_EVENTS, sku, event, partition=home)],
            events=[
                Event(
                    str(event["event_id"]),
                    "rekeyed",
                    reason=why,
                    detail=(
                        f"arrived in partition {record.partition} keyed {key!r}; republished to its "
                        f"slot partition {home}, keyed by SKU, where it is de-duplicated"
                    ),
                    attributes={
                        "sku": sku[: self.policy.max_sku_chars],
                        "from_partition": str(record.partition),
                        "to_partition": str(home),
                        "key": "" if key is None else key[:200],
                        **({"account": charge.account} if charge is not None else {}),
                    },
                )
            ],
        )

    def _rejected(
        self, event: dict[str, Any], reason: str, field: str, detail: str, all_reasons: str = ""
    ) -> Outcome:
        attributes = {
            "field": field,
            "sku": str((event.get("product") or {}).get("sku", ""))[: self.policy.max_sku_chars],
            "all_reasons": (all_reasons or f"{reason}@{field}")[:2000],
        }
        return Outcome(
            events=[
                Event(
                    str(event.get("event_id", "")),
                    "rejected_event",
                    reason,
                    detail[:1000],
                    attributes=attributes,
                )
            ]
        )

    def _over_budget(self, event: dict[str, Any], over: OverBudget) -> Outcome:
        outcome = self._rejected(event, "over_budget", over.charge.field, over.detail())
        outcome.events[0].attributes.update(over.attributes())
        return outcome

    def _refused(self, event: dict[str, Any], plan: Plan) -> Outcome:
        event_id = str(event["event_id"])
        seen = plan.decided_by
        assert seen is not None
        if plan.verdict == "duplicate_event":
            return Outcome(
                events=[
                    Event(
                        event_id,
                        "duplicate_event",
                        reason="duplicate_event_id",
                        detail=f"already accepted as {len(seen.job_ids)} job(s)",
                        attributes={"job_ids": ",".join(seen.job_ids)},
                    )
                ]
            )
        if plan.verdict == "conflicting_duplicate":
            outcome = self._rejected(
                event,
                "conflicting_duplicate",
                "event_id",
                f"event id {event_id} was accepted before with other content: a reused event id is "
                "never taken for a duplicate; send a changed event under a new event id",
            )
        else:
            outcome = self._rejected(
                event,
                "stale_event",
                "occurred_at",
                f"occurred_at {occurred_ms(event)} is not newer than {seen.occurred_at} (epoch ms) "
                f"of event {seen.event_id}, the newest accepted for slot {plan.stale_slot}",
            )
            outcome.events[0].attributes.update(
                {
                    "slot": plan.stale_slot[:1000],
                    "newer_event_id": seen.event_id,
                    "newer_occurred_at": str(seen.occurred_at),
                }
            )
        outcome.events[0].attributes["first_seen_at"] = str(seen.first_seen_at)
        return outcome

    def _accepted(self, record: InputRecord, event_id: str, sku: str, plan: Plan) -> Outcome:
        outcome = Outcome()
        for key, entry in plan.writes:
            self.seen.put(key, entry)
            outcome.outputs.append(
                Output(Topic.INTAKE_SEEN, key, entry.to_record(key), partition=record.partition)
            )
        for decision in plan.slots:
            job = decision.job
            if decision.kind == "duplicate":
                current = decision.current
                assert current is not None
                # Same slot, same product content: no new work; recorded on the job that stands.
                outcome.events.append(
                    Event(
                        decision.current_job_id,
                        "duplicate_job",
                        reason="duplicate_idempotency_key",
                        detail=f"already requested by event {current.event_id}",
                        attributes={"event_id": event_id, "idempotency_key": job["idempotency_key"]},
                    )
                )
                continue
            outcome.outputs.append(Output(Topic.JOBS_ACCEPTED, job["job_id"], job))
            attributes = {
                "event_id": event_id,
                "sku": sku,
                "slot": job["idempotency_key"],
                "asset_version": str(job["asset_version"]),
            }
            # GET /v1/jobs filters on these: a job is findable by campaign from its first event.
            if job["spec"].get("campaign"):
                attributes["campaign"] = job["spec"]["campaign"]
            if job["supersedes"]:
                attributes["supersedes"] = job["supersedes"]
            outcome.events.append(job_event(job, "pending", attributes=attributes))
        return outcome
